//! The dashboard in headless Chromium (through chromedriver, which scripts/test installs):
//! nothing but the token prompt before login; the favicon; enter the token; a model whose
//! key is missing is said so under the form; start a cascade from the form, watch the
//! workers turn done live in the tier tree (workers under their synthesizer, synthesizers
//! under the executive), see the final report, open an agent's output rendered from
//! Markdown (and model text that holds HTML shown as text, never run); a running run's
//! live counts in the list; a cancelled step painted as cancelled; a 100-subtask plan review
//! as a list with its buttons in sight; no horizontal overflow at 420 px. It keeps a
//! screenshot of the finished cascade (in the test's target directory;
//! `BELT_DASHBOARD_SCREENSHOT=PATH` writes another copy, e.g. docs/dashboard.png).
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

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
            // The form's missing-key message needs the key missing.
            .env_remove("OPENAI_API_KEY")
            .env("OLLAMA_HOST", "127.0.0.1:9")
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

/// A wait of at most `secs` seconds, polling every 50 ms.
fn wait(browser: &Client, secs: u64) -> fantoccini::wait::Wait<'_> {
    browser.wait().at_most(Duration::from_secs(secs)).every(Duration::from_millis(50))
}

/// `script`'s value (a promise it returns is awaited by WebDriver).
async fn js(browser: &Client, script: &str) -> Value {
    browser.execute(script, vec![]).await.unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// Poll `script` (at most `secs` seconds) until it returns true.
async fn until(browser: &Client, secs: u64, script: &str) {
    for _ in 0..secs * 20 {
        if js(browser, script).await == json!(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not true within {secs} s: {script}");
}

/// Start a run through the API from the page (fields the form does not have); its id.
async fn post_run(browser: &Client, body: Value) -> String {
    let script = format!(
        "return fetch('/v1/runs', {{method: 'POST', headers: {{Authorization: 'Bearer {TOKEN}', \
         'Content-Type': 'application/json'}}, body: JSON.stringify({body})}}).then(r => r.json())"
    );
    let accepted = js(browser, &script).await;
    accepted["run_id"].as_str().unwrap_or_else(|| panic!("{accepted}")).to_string()
}

/// At `width` px, nothing is wider than the window; back to the usual size after.
async fn fits(browser: &Client, width: u32, what: &str) {
    browser.set_window_size(width, 900).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sizes = js(browser, "return [document.documentElement.scrollWidth, window.innerWidth]").await;
    let (scroll, inner) = (sizes[0].as_u64().unwrap(), sizes[1].as_u64().unwrap());
    assert!(
        inner <= u64::from(width) && scroll <= inner,
        "{what} at {width} px: {scroll} px wide in {inner}"
    );
    browser.set_window_size(1400, 1900).await.unwrap();
}

/// Before the token: the prompt and nothing else; the favicon is served.
async fn before_login(browser: &Client, base: &str) {
    browser.goto(&format!("{base}/")).await.unwrap();
    wait(browser, 10).for_element(Locator::Css("#token-panel:not([hidden]) #token-input")).await.unwrap();
    let shown = js(
        browser,
        "return ['app', 'new-run', 'approvals', 'runs', 'run-view'].filter(id => \
         document.getElementById(id).checkVisibility())",
    )
    .await;
    assert_eq!(shown, json!([]), "shown under the token prompt");
    let icon = js(
        browser,
        "return fetch('/favicon.ico').then(async r => [r.status, r.headers.get('content-type'), \
         [...new Uint8Array(await r.arrayBuffer()).slice(0, 4)]])",
    )
    .await;
    assert_eq!(icon, json!([200, "image/x-icon", [0, 0, 1, 0]]), "an ICO file");
    fits(browser, 420, "the token prompt").await;
}

async fn login(browser: &Client) {
    let input = browser.find(Locator::Id("token-input")).await.unwrap();
    input.send_keys(TOKEN).await.unwrap();
    browser.find(Locator::Id("token-save")).await.unwrap().click().await.unwrap();
    wait(browser, 10)
        .for_element(Locator::Css("#app:not([hidden])"))
        .await
        .expect("the app opens with the token");
}

/// Fill the form and press Start.
async fn start_from_form(browser: &Client, task: &str, agents: &str, model: &str) {
    let field = browser.find(Locator::Id("task")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(task).await.unwrap();
    for (id, value) in [("agents", agents), ("model", model)] {
        let input = browser.find(Locator::Id(id)).await.unwrap();
        input.clear().await.unwrap();
        if !value.is_empty() {
            input.send_keys(value).await.unwrap();
        }
    }
    browser.find(Locator::Id("start")).await.unwrap().click().await.unwrap();
}

/// A model whose provider has no key: the form says which variable to set.
async fn missing_key_is_said(browser: &Client) {
    start_from_form(browser, "Needs a key", "3", "openai/gpt-4o-mini").await;
    until(browser, 10, "return document.getElementById('start-error').textContent.length > 0").await;
    let said = browser.find(Locator::Id("start-error")).await.unwrap().text().await.unwrap();
    assert!(said.contains("OPENAI_API_KEY") && said.contains("not set"), "{said}");
}

/// The 12-agent cascade from the form, in its tier tree, with its report and outputs.
async fn cascade_in_its_tree(browser: &Client) {
    start_from_form(browser, "Plan a city park", "12", "").await;
    wait(browser, 20)
        .for_element(Locator::Css("#tree .agent[data-step^=\"worker/\"]"))
        .await
        .expect("workers");
    wait(browser, 60)
        .for_element(Locator::Css(
            "#tree-root > .tnode[data-step=\"executive\"] > .agent[data-status=\"done\"]",
        ))
        .await
        .expect("the executive turns done, on top of the tree");
    let done =
        browser.find_all(Locator::Css(".agent[data-step^=\"worker/\"][data-status=\"done\"]")).await.unwrap();
    assert_eq!(done.len(), 12, "every worker done");
    // Two synthesizers under the executive, six workers under each, nothing else at the top.
    let tree = js(
        browser,
        "const kids = (n) => [...n.querySelector(':scope > .children').children].map(c => c.dataset.step);\
         const top = [...document.getElementById('tree-root').children];\
         return top.map(t => [t.dataset.step, kids(t).map(s => [s, kids(t.querySelector(`.tnode[data-step=\"${s}\"]`)).length])])",
    )
    .await;
    assert_eq!(tree, json!([["executive", [["synth/1/001", 6], ["synth/1/002", 6]]]]), "{tree}");
    let first = js(browser, "return [...document.querySelector('.tnode[data-step=\"synth/1/001\"] > .children').children].map(c => c.dataset.step)").await;
    assert_eq!(first[0], "worker/001");
    assert_eq!(first[5], "worker/006");
    wait(browser, 20).for_element(Locator::Css(".pill.completed")).await.expect("the run is completed");
    let counts = browser.find(Locator::Id("counts")).await.unwrap().text().await.unwrap();
    assert!(counts.starts_with("16/16"), "{counts}");
    let tokens = browser.find(Locator::Id("tokens")).await.unwrap().text().await.unwrap();
    assert_ne!(tokens, "0");

    // The final report renders (sandboxed) once done.
    wait(browser, 20)
        .for_element(Locator::Css("#report-panel:not([hidden])"))
        .await
        .expect("the report shows");
    let report =
        browser.find(Locator::Id("report-frame")).await.unwrap().attr("srcdoc").await.unwrap().unwrap();
    assert!(report.contains("Plan a city park"), "the report is the run's");
    // And it is rendered (a frame that refused to render has an empty document).
    let rendered =
        js(browser, "return document.getElementById('report-frame').contentDocument.body.innerText").await;
    assert!(rendered.as_str().unwrap_or_default().contains("Plan a city park"), "{rendered:?}");

    // An agent's output opens on click, rendered from Markdown.
    browser.find(Locator::Css(".agent[data-step=\"worker/001\"]")).await.unwrap().click().await.unwrap();
    wait(browser, 10).for_element(Locator::Css("#agent-panel:not([hidden])")).await.unwrap();
    until(browser, 10, "return document.querySelectorAll('#agent-text li').length > 0").await;
    let text = browser.find(Locator::Id("agent-text")).await.unwrap().text().await.unwrap();
    assert!(text.contains("simulated"), "{text}");
    assert!(!text.contains("**") && !text.contains("\n- "), "Markdown left raw: {text}");
    let strong = browser.find_all(Locator::Css("#agent-text strong")).await.unwrap();
    assert!(!strong.is_empty(), "bold is bold");

    let shot = browser.screenshot().await.unwrap();
    assert_eq!(&shot[1..4], b"PNG");
    std::fs::write(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png"), &shot).unwrap();
    if let Some(path) = std::env::var_os("BELT_DASHBOARD_SCREENSHOT") {
        std::fs::write(path, &shot).unwrap();
    }
    fits(browser, 420, "a finished cascade with an agent's output").await;
}

/// Model text holding HTML is shown as text: no element is made of it, no script runs.
async fn model_html_is_text(browser: &Client) {
    let description = "Sketch <img src=x onerror=\"window.__pwned=1\"> the **north** lawn";
    let id = post_run(
        browser,
        json!({"task": "Lay out a garden", "plan": [{"description": description}], "sim_latency_ms": 0}),
    )
    .await;
    js(browser, &format!("openRun('{id}'); return true")).await;
    wait(browser, 30)
        .for_element(Locator::Css(&format!("#tree[data-loaded=\"{id}\"]")))
        .await
        .expect("it completes");
    assert_eq!(browser.find(Locator::Id("run-status")).await.unwrap().text().await.unwrap(), "completed");
    let worker =
        wait(browser, 10).for_element(Locator::Css(".agent[data-step=\"worker/001\"]")).await.unwrap();
    worker.click().await.unwrap();
    until(browser, 10, "return document.getElementById('agent-text').textContent.includes('onerror')").await;
    let found = js(
        browser,
        "const t = document.getElementById('agent-text');\
         const h = [...t.querySelectorAll('h3, h4, h5, h6')].find(h => h.textContent.includes('<img'));\
         return [t.querySelectorAll('img').length, window.__pwned === undefined, h ? h.textContent : null, \
                 h ? h.querySelector('strong')?.textContent : null]",
    )
    .await;
    assert_eq!(
        found,
        json!([0, true, "Sketch <img src=x onerror=\"window.__pwned=1\"> the north lawn", "north"]),
        "the heading shows the HTML as text and the bold as bold"
    );
}

/// A running run's list entry counts its steps as they finish; a cancel paints the steps it
/// stopped as cancelled, not failed.
async fn live_counts_and_cancel(browser: &Client) {
    let id = post_run(
        browser,
        json!({"task": "A slow survey", "agents": 40, "concurrency": 1, "sim_latency_ms": 300}),
    )
    .await;
    let meta = format!("#runs li[data-run-id=\"{id}\"] .meta");
    let counted = format!(
        "const t = document.querySelector('{meta}')?.textContent || ''; \
         return /^running · cascade · [1-9]\\d* steps? · \\$/.test(t) && !t.endsWith('$0.0000')"
    );
    until(browser, 30, &counted).await;
    browser
        .find(Locator::Css(&format!("#runs li[data-run-id=\"{id}\"]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait(browser, 20)
        .for_element(Locator::Css(".agent[data-step^=\"worker/\"][data-status=\"running\"]"))
        .await
        .unwrap();
    browser.find(Locator::Id("cancel")).await.unwrap().click().await.unwrap();
    wait(browser, 30).for_element(Locator::Css(".pill.cancelled")).await.expect("the run is cancelled");
    // The result has come and is painted.
    wait(browser, 20).for_element(Locator::Css(&format!("#tree[data-loaded=\"{id}\"]"))).await.unwrap();
    let painted = js(
        browser,
        "return ['cancelled', 'failed'].map(s => document.querySelectorAll(`.agent[data-status=\"${s}\"]`).length)",
    )
    .await;
    assert!(painted[0].as_u64().unwrap() >= 1 && painted[1] == json!(0), "cancelled, failed: {painted}");
    let counts = browser.find(Locator::Id("counts")).await.unwrap().text().await.unwrap();
    assert!(counts.contains("cancelled") && !counts.contains("failed"), "{counts}");
}

/// A 100-subtask plan review: a list, the buttons in sight; approved there, the run goes on.
async fn plan_review_as_a_list(browser: &Client) {
    browser.find(Locator::Id("review")).await.unwrap().click().await.unwrap();
    start_from_form(browser, "Reviewed plan", "100", "").await;
    let item = wait(browser, 30)
        .for_element(Locator::Css("#approvals li.approval"))
        .await
        .expect("the question appears");
    let task_shown = browser.find(Locator::Id("run-task")).await.unwrap().text().await.unwrap();
    assert_eq!(task_shown, "Reviewed plan", "the form opens the run it started");
    assert!(item.text().await.unwrap().contains("hitl/plan"));
    let shown = item.find_all(Locator::Css("ol.plan > li")).await.unwrap();
    assert_eq!(shown.len(), 20, "the subtasks the engine shows, one item each");
    assert!(item.text().await.unwrap().contains("and 80 more"));
    let approve = item.find(Locator::XPath(".//button[text()='Approve']")).await.unwrap();
    // In sight: inside the window and not covered or clipped by a scroll box.
    let visible = browser
        .execute(
            "const b = arguments[0]; b.scrollIntoView({block: 'nearest'}); const r = b.getBoundingClientRect();\
             return r.top >= 0 && r.bottom <= innerHeight && document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2) === b",
            vec![serde_json::to_value(&approve).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(visible, json!(true), "the Approve button is in sight");
    let list_box = js(
        browser,
        "const l = document.querySelector('#approvals ol.plan'); return l.scrollHeight > l.clientHeight",
    )
    .await;
    assert_eq!(list_box, json!(true), "the plan scrolls in its own box");
    approve.click().await.unwrap();
    wait(browser, 120)
        .for_element(Locator::Css(".pill.completed"))
        .await
        .expect("the approved run completes");
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

    before_login(&browser, &base).await;
    login(&browser).await;
    missing_key_is_said(&browser).await;
    cascade_in_its_tree(&browser).await;
    model_html_is_text(&browser).await;
    live_counts_and_cancel(&browser).await;
    plan_review_as_a_list(&browser).await;

    browser.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&home);
}
