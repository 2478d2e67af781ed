//! Running `EVALSHA` scripts, alone or in pipelines, with one reload on `NOSCRIPT`.

use redis::aio::ConnectionLike;
use redis::{ErrorKind, FromRedisValue, Pipeline, RedisResult, Script, ServerErrorKind};

/// Adds `EVALSHA script 1 key args..` to `pipe`.
pub(crate) fn push_evalsha<'p>(
    pipe: &'p mut Pipeline,
    script: &Script,
    key: &[u8],
) -> &'p mut Pipeline {
    pipe.cmd("EVALSHA").arg(script.get_hash()).arg(1).arg(key)
}

/// Runs `pipe` (whose scripted commands all use `script`); if Redis does not know the
/// script, loads it and runs the pipeline again. Only for pipelines that are safe to
/// repeat: every command in them failed with `NOSCRIPT` or is idempotent.
pub(crate) async fn query_scripted<T, C>(
    conn: &mut C,
    script: &Script,
    pipe: &Pipeline,
) -> RedisResult<T>
where
    T: FromRedisValue,
    C: ConnectionLike + Send,
{
    match pipe.query_async(conn).await {
        Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            script.load_async(conn).await?;
            pipe.query_async(conn).await
        }
        result => result,
    }
}
