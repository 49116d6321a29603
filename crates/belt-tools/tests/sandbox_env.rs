//! The sandbox shows the program nothing of the host's environment or home: API tokens in
//! the environment and a secret file under `$HOME`/`$BELT_HOME` stay out of reach. Its own
//! test binary, because it sets environment variables (only safe with no other threads).

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod sandbox_common;

use belt_tools::sandbox::Language;
use sandbox_common::sandbox;

const SECRET: &str = "sk-belt-secret-do-not-leak";

#[test]
fn host_tokens_and_home_files_are_invisible() {
    let home = std::env::temp_dir().join(format!("belt-sbx-home-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let secret_file = home.join("credentials");
    std::fs::write(&secret_file, SECRET).unwrap();
    // SAFETY: this test binary has one test, and no other thread has started yet.
    unsafe {
        std::env::set_var("BELT_API_TOKEN", SECRET);
        std::env::set_var("OPENAI_API_KEY", SECRET);
        std::env::set_var("BELT_HOME", &home);
        std::env::set_var("HOME", &home);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let sandbox = sandbox().await;
        let path = secret_file.display();
        let sh = format!(
            "env; cat /proc/self/environ /proc/1/environ; echo; echo HOME=$HOME; cat {path}; ls {home}; cat ~/credentials",
            home = home.display()
        );
        let report = sandbox.run(Language::Sh, &sh, "").await.unwrap();
        let all = format!("{}{}", report.stdout, report.stderr);
        assert!(!all.contains(SECRET), "the secret leaked: {all}");
        assert!(!all.contains("BELT_") && !all.contains("OPENAI"), "{all}");
        assert!(report.stdout.contains("HOME=/work\n"), "{all}");
        assert!(report.stderr.contains(&format!("{path}: No such file or directory")), "{all}");
        let py = format!("import os\nprint(sorted(os.environ))\nprint(os.path.exists({:?}))", path.to_string());
        let report = sandbox.run(Language::Python, &py, "").await.unwrap();
        assert_eq!(report.stdout, "['HOME', 'LANG', 'PATH', 'PWD', 'PYTHONDONTWRITEBYTECODE', 'TMPDIR']\nFalse\n", "{report:?}");
    });
    std::fs::remove_dir_all(&home).unwrap();
}
