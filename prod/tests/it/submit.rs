//! `RuntimeHandle::submit` answers with what the API needs, computed in the runtime
//! task right after the input is handled: no second round trip.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::common::TestApp;
use payperplay_core::{Input, RejectReason, Rejection, ServerId, ServerState, UserId};
use payperplay_prod::runtime::RuntimeError;
use sqlx::PgPool;

#[sqlx::test(migrations = "../migrations")]
async fn submit_returns_the_answer_computed_right_after_the_input(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("answered@example.com").await;
    app.credit(&admin, user_id, 1_000_000).await;
    let handle = app.services.as_ref().unwrap().handle.clone();
    let user = UserId(user_id as u64);

    // The answer sees the input's effect: the top-up is in the booked balance.
    let booked = handle
        .submit(
            Input::TopUp {
                user_id: user,
                amount_micros: 250_000,
            },
            move |core| core.balance_micros(user),
        )
        .await
        .unwrap();
    assert_eq!(booked, Some(1_250_000));

    // A start answers with the state the core moved the server to.
    let id = app.create_server(&token, "answered", 2048).await;
    let server_id = ServerId(id as u64);
    let (state, node) = handle
        .submit(Input::StartServer { server_id }, move |core| {
            let server = core.server(server_id).expect("known");
            (server.state, server.node)
        })
        .await
        .unwrap();
    assert_eq!(state, ServerState::Starting);
    assert!(node.is_some(), "placed at once on the free dedicated node");

    // A refused input is the rejection by name, and the answer is not computed.
    let answered = Arc::new(AtomicBool::new(false));
    let flag = answered.clone();
    let refused = handle
        .submit(
            Input::StartServer {
                server_id: ServerId(987_654),
            },
            move |_| flag.store(true, Ordering::SeqCst),
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(RuntimeError::Rejected(Rejection {
                reason: RejectReason::UnknownServer
            }))
        ),
        "{refused:?}"
    );
    assert!(!answered.load(Ordering::SeqCst));
    app.stop().await;
}
