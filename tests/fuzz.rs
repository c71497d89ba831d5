//! The fuzz run: schemathesis (from PyPI) against the running system's `/openapi.json`, with its
//! coverage, fuzzing and stateful phases, once per key role over the operations of that role. It
//! fails on any 5xx, any status the document does not declare for the operation, and any response
//! (errors included) that does not match its declared schema and content type.
//!
//! The budget is `GUARANTOR_FUZZ_SECONDS` per role (20 by default, as in CI); run longer by hand,
//! e.g. `GUARANTOR_FUZZ_SECONDS=600 cargo test -p guarantor --test fuzz -- --nocapture`.

mod support;

use support::System;

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,response_headers_conformance";

/// (role, operations of the role as a path regex, whether the regex includes or excludes).
const PASSES: [(&str, &str, bool); 3] = [
    ("platform", "/admin/|/dispute/close_", false),
    (
        "arbiter",
        "/dispute/close_|^/api/v1/deal/?$|^/api/v1/deal/\\{deal_id\\}$",
        true,
    ),
    ("admin", "/admin/", true),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_response_outside_the_openapi_document() {
    let seconds = std::env::var("GUARANTOR_FUZZ_SECONDS").unwrap_or_else(|_| "20".to_owned());
    let cli = tokio::task::spawn_blocking(|| {
        guarantor_testkit::schemathesis_cli(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")))
    })
    .await
    .unwrap();
    let system = System::up().await;
    for (role, paths, include) in PASSES {
        let filter = if include {
            "--include-path-regex"
        } else {
            "--exclude-path-regex"
        };
        let (ok, report, stderr) = support::output(
            tokio::process::Command::new(&cli)
                // schemathesis keeps its example cache in the working directory: not in the tree.
                .current_dir(env!("CARGO_TARGET_TMPDIR"))
                .args(["--no-color", "run"])
                .arg(format!("{}/openapi.json", system.base))
                .args(["--header", &format!("Authorization: Bearer {}", system.dev_key(role))])
                .args([filter, paths])
                .args(["--checks", CHECKS])
                .args(["--phases", "coverage,fuzzing,stateful"])
                .args(["--max-time", &seconds, "--workers", "1"]),
        )
        .await;
        let summary: Vec<&str> = report
            .lines()
            .filter(|line| line.contains("generated,") || line.contains(" passed") || line.contains("failures"))
            .collect();
        eprintln!("schemathesis as {role}: {}", summary.join(" | "));
        assert!(ok, "schemathesis as {role} failed:\n{report}\n{stderr}");
    }
    system.assert_invariants().await;
}
