//! The admin APIs' OpenAPI documents (docs/openapi/): the committed copies match what the
//! handlers generate, and every process serves its own at `/openapi.json`.
//!
//! Regenerate the committed copies after changing an admin route:
//! `FERRISDB_BLESS=1 cargo test --test openapi`.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::time::Duration;

use ferrisdb_server_common::openapi::{ApiInfo, to_json};
use support::DevCluster;

/// Every admin API: its name and its document as the handlers generate it.
fn documents() -> Vec<(ApiInfo, utoipa::openapi::OpenApi)> {
    vec![
        (
            ferrisdb_compute::admin_api::ADMIN_API,
            ferrisdb_compute::admin_api::openapi(),
        ),
        (
            ferrisdb_pageserver::admin_api::ADMIN_API,
            ferrisdb_pageserver::admin_api::openapi(),
        ),
        (
            ferrisdb_wal_service::admin_api::ADMIN_API,
            ferrisdb_wal_service::admin_api::openapi(),
        ),
    ]
}

fn committed_path(info: &ApiInfo) -> PathBuf {
    support::root()
        .join("docs/openapi")
        .join(format!("{}.json", info.component))
}

#[test]
fn committed_documents_match_the_handlers() {
    let bless = std::env::var("FERRISDB_BLESS").is_ok_and(|v| v == "1");
    for (info, api) in documents() {
        let json = to_json(&api);
        let path = committed_path(&info);
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &json).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == json,
            "{} is stale (or missing): regenerate it with `FERRISDB_BLESS=1 cargo test --test openapi`",
            path.display()
        );
    }
}

#[test]
fn every_document_is_openapi_3_1_with_errors_and_auth() {
    for (info, api) in documents() {
        let doc: serde_json::Value = serde_json::from_str(&to_json(&api)).unwrap();
        let name = info.component;
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1"),
            "{name}"
        );
        let error = &doc["components"]["schemas"]["ErrorBody"];
        assert_eq!(error["required"], serde_json::json!(["error"]), "{name}");
        let detail = &doc["components"]["schemas"]["ErrorDetail"];
        let mut required: Vec<&str> = detail["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        required.sort_unstable();
        assert_eq!(required, ["code", "message"], "{name}");
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["bearer"]["scheme"], "bearer", "{name}");
        assert_eq!(
            schemes["cluster_token"]["name"],
            ferrisdb_common::net::CLUSTER_TOKEN_HEADER,
            "{name}"
        );
        let paths = doc["paths"].as_object().unwrap();
        for route in ["/healthz", "/metrics", "/openapi.json", "/v1/status"] {
            assert!(paths.contains_key(route), "{name} lacks {route}");
        }
        for (route, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                assert_eq!(
                    op["responses"]["default"]["$ref"], "#/components/responses/Error",
                    "{name} {method} {route}"
                );
                // Only the probes, the document itself and the identity challenge are open.
                let open = op["security"] == serde_json::json!([{}]);
                assert_eq!(
                    open,
                    ["/healthz", "/readyz", "/openapi.json", "/v1/identity"]
                        .contains(&route.as_str()),
                    "{name} {method} {route}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_serves_its_document_without_a_credential() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&dir.path().join("c"), &[]).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let documents = documents();
    for c in cluster.components() {
        let (_, api) = documents
            .iter()
            .find(|(info, _)| info.component == c.kind)
            .unwrap_or_else(|| panic!("no document for {}", c.kind));
        let served = http
            .get(format!("{}/openapi.json", c.http))
            .send()
            .await
            .unwrap();
        assert_eq!(served.status(), 200, "{}", c.name);
        assert_eq!(
            served.headers()["content-type"],
            "application/json",
            "{}",
            c.name
        );
        assert_eq!(served.text().await.unwrap(), to_json(api), "{}", c.name);
        // The rest still needs the credential, and says so in the documented shape.
        let refused = http
            .get(format!("{}/v1/status", c.http))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401, "{}", c.name);
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthenticated", "{}", c.name);
        assert!(body["error"]["message"].as_str().is_some(), "{}", c.name);
    }
}
