//! Snapshots of the Markdown report (`cargo insta review` after an intended change, or
//! `INSTA_UPDATE=always cargo test -p belt-report --test markdown`).

mod common;

#[test]
fn rich_run_with_failures_retries_and_sources() {
    let md = belt_report::markdown(&common::rich());
    assert!(
        !md.chars().any(|c| c.is_control() && c != '\n' && c != '\t'),
        "control characters in the Markdown"
    );
    insta::assert_snapshot!("rich", md);
}

#[test]
fn plain_cascade() {
    insta::assert_snapshot!("cascade", belt_report::markdown(&common::cascade(7)));
}
