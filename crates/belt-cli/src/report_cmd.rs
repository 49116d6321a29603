//! `belt report RUN_ID --format … --out DIR`: render a finished run's report again, from
//! the store, in any format.

use std::sync::Arc;

use belt_core::DocumentWriter;
use belt_store::StoreSpec;

use crate::args::ReportArgs;
use crate::error::CliError;
use crate::run_cmd::{self, ReportWriter};

pub async fn report(mut args: ReportArgs, spec: &StoreSpec) -> Result<i32, CliError> {
    let store = run_cmd::open_store(spec).await?;
    args.run_id = crate::history::full_id(&*store, &args.run_id, spec).await?;
    let usage = CliError::from;
    let Some(result) = store.get_result(&args.run_id).await.map_err(usage)? else {
        return Err(CliError::Usage(match store.get_run(&args.run_id).await.map_err(usage)? {
            Some(_) => format!(
                "run {} has not finished, so it has no report yet; `belt resume {}` finishes it",
                args.run_id, args.run_id
            ),
            None => {
                format!("no run `{}` in the store {spec}; `belt runs list` shows the runs there", args.run_id)
            }
        }));
    };
    std::fs::create_dir_all(&args.out).map_err(|e| {
        CliError::Usage(format!(
            "cannot write reports to {}: {e}; choose another --out directory",
            args.out.display()
        ))
    })?;
    let writer =
        Arc::new(ReportWriter { dir: args.out.clone(), formats: belt_app::parse_formats(&args.format)? });
    // Rendering (PDF above all) is CPU work: off the async runtime.
    let documents = tokio::task::spawn_blocking(move || writer.write(&result))
        .await
        .map_err(|e| CliError::Usage(format!("rendering the report was interrupted: {e}")))?;
    match documents {
        Ok(docs) => {
            for d in docs {
                println!("{}", d.path);
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("belt: {e}");
            Ok(1)
        }
    }
}
