//! schemathesis fuzzes the API from its generated OpenAPI document: no 5xx, and no
//! response that breaks the document (status codes, content types, schemas).
//! The API is served on a loopback port; the CLI comes from PAYPERPLAY_SCHEMATHESIS
//! (exported by `scripts/start-services.sh`) or the default venv.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::TestApp;
use axum::http::Method;
use sqlx::PgPool;

fn schemathesis() -> String {
    std::env::var("PAYPERPLAY_SCHEMATHESIS").unwrap_or_else(|_| {
        let venv = format!(
            "{}/.cache/payperplay-venv/bin/st",
            std::env::var("HOME").unwrap_or_default()
        );
        assert!(
            std::path::Path::new(&venv).exists(),
            "no schemathesis CLI: run `source scripts/start-services.sh` (it sets PAYPERPLAY_SCHEMATHESIS)"
        );
        venv
    })
}

#[sqlx::test(migrations = "../migrations")]
async fn schemathesis_finds_no_server_error_and_no_schema_violation(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (admin, admin_id) = app.admin().await;
    app.credit(&admin, admin_id, 1_000_000_000).await;
    for n in 0..3 {
        let id = app.create_server(&admin, &format!("fuzz{n}"), 2048).await;
        if n == 0 {
            app.call(Method::POST, &format!("/v1/servers/{id}/start"), Some(&admin), None)
                .await;
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = app.router.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap();
    });
    // schemathesis writes reports and a crash cache into its working directory: a
    // temporary one, so nothing lands in the source tree.
    let report_dir = std::env::temp_dir().join(format!("payperplay-schemathesis-{}", std::process::id()));
    std::fs::create_dir_all(&report_dir).unwrap();
    let run = tokio::process::Command::new(schemathesis())
        .arg("run")
        .arg(format!("http://{address}/v1/openapi.json"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "25",
            "--seed",
            "20261125",
            "--workers",
            "2",
            "--max-time",
            "150",
            "--request-timeout",
            "10",
            "--generation-database",
            "none",
            "--no-color",
            // Logging out (here or everywhere) would revoke the token the rest of the
            // run uses; both have their own tests.
            "--exclude-path",
            "/v1/accounts/logout",
            "--exclude-path",
            "/v1/accounts/logout-everywhere",
        ])
        .arg("--report-dir")
        .arg(&report_dir)
        .args(["-H", &format!("Authorization: Bearer {admin}")])
        .current_dir(&report_dir)
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(420), run)
        .await
        .expect("schemathesis finishes within 7 minutes")
        .expect("schemathesis runs");
    server.abort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let _ = std::fs::remove_dir_all(&report_dir);
    assert!(
        output.status.success(),
        "schemathesis found problems (exit {:?}):\n{stdout}\n{stderr}",
        output.status.code()
    );
    assert!(stdout.contains("passed"), "schemathesis ran no test:\n{stdout}");
    app.stop().await;
}
