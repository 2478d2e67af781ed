//! The QUIC listener's stateless-reset key, stable across restarts of a node.
//!
//! quinn draws a random reset key per process unless told otherwise, so a gateway that
//! was killed and restarted cannot reset its previous process's connections: their
//! clients only notice at their idle timeout. The gateway binary always sets the key:
//!
//! `key = HMAC-SHA256(secret, "longconn quic stateless reset v1" || node_id as u16 big-endian)`
//!
//! where `secret` is `--quic-reset-secret` (or `[transport] quic_reset_secret`) and,
//! when neither is set, the signing token secret (the first token key, or the
//! development secret on embedded defaults). The node id is mixed in so nodes sharing a
//! secret still have different keys. Restarting a node with the same secrets and node
//! id gives the same key; changing the token secret changes it (old connections then
//! wait for their idle timeout once, as with a random key).

use longconn_transport::QuicResetKey;

/// The label hashed with the node id.
const LABEL: &[u8] = b"longconn quic stateless reset v1";

/// The reset key of node `node_id` for `secret` (see the [module docs](self)).
pub fn derive(secret: &[u8], node_id: u16) -> QuicResetKey {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(LABEL);
    ctx.update(&node_id.to_be_bytes());
    let tag = ctx.sign();
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    QuicResetKey(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_stable_and_depends_on_secret_and_node() {
        let a = derive(b"secret-0123456789", 1);
        assert_eq!(a, derive(b"secret-0123456789", 1), "stable across restarts");
        assert_ne!(a, derive(b"secret-0123456789", 2), "per node");
        assert_ne!(a, derive(b"secret-0123456780", 1), "per secret");
        // Pinned, so an accidental change of the derivation (which would stop a
        // restarted node from resetting old connections once) shows up here.
        let hex: String = derive(b"k", 0)
            .0
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let expected = {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"k");
            let mut msg = LABEL.to_vec();
            msg.extend_from_slice(&[0, 0]);
            let tag = ring::hmac::sign(&key, &msg);
            tag.as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        assert_eq!(hex, expected);
    }
}
