//! The access-layer conformance suite: one set of cases, run over every transport.
#![allow(unreachable_pub)] // test-only modules share items with `pub`
//!
//! Each transport gets a module of tests named after the cases, so a failure reads as
//! `tcp::graceful_shutdown_drains`. The in-memory run is on tokio's paused clock (its
//! timer cases take no wall time); the socket runs wait on real I/O, which a paused
//! clock would skip past, so they run on the wall clock with short timers
//! ([`harness::Timers::WALL`]).

mod cases;
mod fixtures;
mod harness;

macro_rules! conformance {
    ($transport:ident, $fixture:ty, #[$runtime:meta], [$($case:ident),* $(,)?]) => {
        mod $transport {
            $(
                #[$runtime]
                async fn $case() {
                    crate::cases::$case::<$fixture>().await;
                }
            )*
        }
    };
}

macro_rules! all_cases {
    ($transport:ident, $fixture:ty) => {
        all_cases!(
            $transport,
            $fixture,
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        );
    };
    ($transport:ident, $fixture:ty, #[$runtime:meta]) => {
        conformance!(
            $transport,
            $fixture,
            #[$runtime],
            [
                login_ok,
                bad_tokens_are_refused,
                heartbeat_keeps_the_session_alive,
                idle_session_is_closed,
                missing_login_times_out,
                requests_are_echoed,
                pushes_arrive_in_order,
                duplicate_login_kicks_the_older_session,
                oversized_frame_is_refused,
                garbage_is_refused,
                graceful_shutdown_drains,
                slow_consumer_drop_newest,
                slow_consumer_disconnect,
            ]
        );
    };
}

all_cases!(
    memory,
    crate::fixtures::Memory,
    #[tokio::test(start_paused = true)]
);
all_cases!(tcp, crate::fixtures::Tcp);
#[cfg(feature = "tls")]
all_cases!(tls, crate::fixtures::Tls);
#[cfg(feature = "ws")]
all_cases!(ws, crate::fixtures::Ws);
#[cfg(all(feature = "ws", feature = "tls"))]
all_cases!(wss, crate::fixtures::Wss);
#[cfg(feature = "quic")]
all_cases!(quic, crate::fixtures::Quic);
