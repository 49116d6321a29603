//! Render a stored RunResult (the JSON of `belt run --json` or `belt runs export`) in
//! every format, printing how long each took:
//!
//! ```text
//! cargo run --release -p belt-report --example render -- result.json out/
//! ```

use std::time::Instant;

use belt_report::Format;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(input), Some(out)) = (args.next(), args.next()) else {
        eprintln!("usage: render RESULT.json OUT_DIR [FORMATS]");
        std::process::exit(2);
    };
    let formats = Format::parse_list(&args.next().unwrap_or_else(|| "all".into()))?;
    let result: belt_core::RunResult = serde_json::from_str(&std::fs::read_to_string(&input)?)?;
    std::fs::create_dir_all(&out)?;
    for format in formats {
        if !format.available() {
            println!("{format:<5} left out of this build");
            continue;
        }
        let path = std::path::Path::new(&out).join(belt_report::file_name(&result, format.extension()));
        let start = Instant::now();
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        belt_report::render(&result, format, &mut file)?;
        drop(file);
        let size = std::fs::metadata(&path)?.len();
        println!(
            "{format:<5} {:>8.3} s {:>10} bytes  {}",
            start.elapsed().as_secs_f64(),
            size,
            path.display()
        );
    }
    Ok(())
}
