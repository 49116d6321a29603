//! The dashboard in headless Chromium (through chromedriver, which scripts/test installs):
//! enter the token, start a cascade from the form, watch the workers turn done live, see
//! the final report, open an agent's output, answer a plan review in the approvals inbox,
//! and keep a screenshot (in the test's target directory; `BELT_DASHBOARD_SCREENSHOT=PATH`
//! writes another copy, e.g. docs/dashboard.png).
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use serde_json::json;

const TOKEN: &str = "dashboard-test-token";

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `belt serve` on a free port; its base URL.
fn serve(home: &std::path::Path) -> (Kill, String) {
    let mut child = Kill(
        Command::new(env!("CARGO_BIN_EXE_belt"))
            .args(["--store", &format!("sqlite://{}/belt.db", home.display())])
            .args(["serve", "--addr", "127.0.0.1:0", "--model", "simulated/default"])
            .env("BELT_HOME", home)
            .env("BELT_API_TOKEN", TOKEN)
            .current_dir(home)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start belt serve"),
    );
    let stderr = child.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let line = lines.next().expect("belt serve printed its address").unwrap();
        if let Some(rest) = line.strip_prefix("belt: serving on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}

async fn chromedriver() -> (Kill, String) {
    let port = free_port();
    // Killed and waited for by `Kill` on drop.
    let child = Kill(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (scripts/test installs Debian's chromium-driver)"),
    );
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return (child, format!("http://127.0.0.1:{port}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_starts_a_run_shows_it_live_and_renders_its_report() {
    let home = std::env::temp_dir().join(format!("belt-dashboard-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let (_server, base) = serve(&home);
    let (_driver, webdriver) = chromedriver().await;

    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium",
               "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1900"]}),
    );
    let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&webdriver)
        .await
        .expect("a WebDriver session in headless Chromium");
    let wait = |secs: u64| browser.wait().at_most(Duration::from_secs(secs)).every(Duration::from_millis(50));

    // The token is asked for once.
    browser.goto(&format!("{base}/")).await.unwrap();
    let input = wait(10).for_element(Locator::Css("#token-panel:not([hidden]) #token-input")).await.unwrap();
    input.send_keys(TOKEN).await.unwrap();
    browser.find(Locator::Id("token-save")).await.unwrap().click().await.unwrap();
    wait(10).for_element(Locator::Css("#app:not([hidden])")).await.expect("the app opens with the token");

    // Start a cascade from the form.
    let task = browser.find(Locator::Id("task")).await.unwrap();
    task.send_keys("Plan a city park").await.unwrap();
    let agents = browser.find(Locator::Id("agents")).await.unwrap();
    agents.clear().await.unwrap();
    agents.send_keys("12").await.unwrap();
    browser.find(Locator::Id("start")).await.unwrap().click().await.unwrap();

    // Agents appear and turn done live; the executive last.
    wait(20).for_element(Locator::Css("#tier-worker .agent")).await.expect("workers appear");
    wait(60)
        .for_element(Locator::Css("#tier-executive .agent[data-status=\"done\"]"))
        .await
        .expect("the executive turns done");
    let done = browser.find_all(Locator::Css("#tier-worker .agent[data-status=\"done\"]")).await.unwrap();
    assert_eq!(done.len(), 12, "every worker done");
    let synths =
        browser.find_all(Locator::Css("#tier-synthesizer .agent[data-status=\"done\"]")).await.unwrap();
    assert_eq!(synths.len(), 2);
    wait(20).for_element(Locator::Css(".pill.completed")).await.expect("the run is completed");
    let counts = browser.find(Locator::Id("counts")).await.unwrap().text().await.unwrap();
    assert!(counts.starts_with("16/16"), "{counts}");
    let tokens = browser.find(Locator::Id("tokens")).await.unwrap().text().await.unwrap();
    assert_ne!(tokens, "0");

    // The final report renders (sandboxed) once done.
    wait(20).for_element(Locator::Css("#report-panel:not([hidden])")).await.expect("the report shows");
    let report =
        browser.find(Locator::Id("report-frame")).await.unwrap().attr("srcdoc").await.unwrap().unwrap();
    assert!(report.contains("Plan a city park"), "the report is the run's");
    // And it is rendered (a frame that refused to render has an empty document).
    let rendered = browser
        .execute("return document.getElementById('report-frame').contentDocument.body.innerText", vec![])
        .await
        .unwrap();
    assert!(rendered.as_str().unwrap_or_default().contains("Plan a city park"), "{rendered:?}");

    // An agent's output opens on click.
    browser.find(Locator::Css("#tier-worker .agent")).await.unwrap().click().await.unwrap();
    wait(10).for_element(Locator::Css("#agent-panel:not([hidden])")).await.unwrap();
    let mut text = String::new();
    for _ in 0..100 {
        text = browser.find(Locator::Id("agent-text")).await.unwrap().text().await.unwrap();
        if text.len() > 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(text.contains("simulated"), "{text}");

    let shot = browser.screenshot().await.unwrap();
    assert_eq!(&shot[1..4], b"PNG");
    std::fs::write(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png"), &shot).unwrap();
    if let Some(path) = std::env::var_os("BELT_DASHBOARD_SCREENSHOT") {
        std::fs::write(path, &shot).unwrap();
    }

    // A plan review waits in the approvals inbox until approved there.
    let task = browser.find(Locator::Id("task")).await.unwrap();
    task.clear().await.unwrap();
    task.send_keys("Reviewed plan").await.unwrap();
    browser.find(Locator::Id("review")).await.unwrap().click().await.unwrap();
    browser.find(Locator::Id("start")).await.unwrap().click().await.unwrap();
    let item =
        wait(30).for_element(Locator::Css("#approvals li.approval")).await.expect("the question appears");
    assert!(item.text().await.unwrap().contains("hitl/plan"));
    item.find(Locator::XPath(".//button[text()='Approve']")).await.unwrap().click().await.unwrap();
    wait(60).for_element(Locator::Css(".pill.completed")).await.expect("the approved run completes");
    let task_shown = browser.find(Locator::Id("run-task")).await.unwrap().text().await.unwrap();
    assert_eq!(task_shown, "Reviewed plan");

    browser.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&home);
}
