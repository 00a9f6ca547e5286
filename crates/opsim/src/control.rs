//! The `/_sim` control API: what tests and the demo use to mint and revoke tokens, inject
//! faults, read the request log and export the directory as lookup files.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::faults::Fault;
use crate::token::TokenSpec;
use crate::{RequestRecord, Sim};

pub(crate) async fn mint(State(sim): State<Sim>, body: Bytes) -> Response {
    let spec: TokenSpec = if body.is_empty() {
        TokenSpec::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(spec) => spec,
            Err(e) => {
                return (StatusCode::BAD_REQUEST, format!("bad token spec: {e}")).into_response()
            }
        }
    };
    Json(json!({"token": sim.mint_token(&spec)})).into_response()
}

#[derive(Deserialize)]
pub(crate) struct TokenRef {
    token: String,
}

pub(crate) async fn revoke(State(sim): State<Sim>, Json(t): Json<TokenRef>) -> StatusCode {
    if sim.revoke(&t.token) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

pub(crate) async fn restore(State(sim): State<Sim>, Json(t): Json<TokenRef>) -> StatusCode {
    if sim.restore(&t.token) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

/// Accepts one fault or a list.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Faults {
    One(Fault),
    Many(Vec<Fault>),
}

pub(crate) async fn add_faults(State(sim): State<Sim>, Json(faults): Json<Faults>) -> StatusCode {
    let faults = match faults {
        Faults::One(f) => vec![f],
        Faults::Many(v) => v,
    };
    for f in faults {
        sim.inject(f);
    }
    StatusCode::NO_CONTENT
}

pub(crate) async fn clear_faults(State(sim): State<Sim>) -> StatusCode {
    sim.clear_faults();
    StatusCode::NO_CONTENT
}

pub(crate) async fn requests(State(sim): State<Sim>) -> Json<Vec<RequestRecord>> {
    Json(sim.requests())
}

pub(crate) async fn directory(State(sim): State<Sim>) -> Json<Value> {
    let dir = sim.directory();
    Json(json!({
        "items": dir.op_item_list(), "vaults": dir.op_vault_list(),
        "users": dir.op_user_list(), "groups": dir.op_group_list(),
    }))
}
