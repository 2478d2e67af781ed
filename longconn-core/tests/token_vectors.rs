//! Checks `TokenKeys` against the `tokens` vectors of docs/protocol-vectors.json, minted
//! by the independent Python generator (docs/tools/gen_protocol_vectors.py): the HMAC
//! key is the secret's UTF-8 bytes, ids are unpadded base64url.

use longconn_core::token::{DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET};
use longconn_core::{TokenKey, TokenKeys};
use serde_json::Value;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol-vectors.json");

#[test]
fn token_vectors_mint_and_verify() {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(VECTORS).unwrap()).unwrap();
    let vectors = doc["tokens"].as_array().expect("a `tokens` list");
    assert!(vectors.len() >= 4, "{} token vectors", vectors.len());
    let mut saw_dev = false;
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let (kid, secret) = (v["kid"].as_str().unwrap(), v["secret"].as_str().unwrap());
        assert_eq!(
            v["secret_hex"].as_str().unwrap(),
            hex(secret.as_bytes()),
            "{name}"
        );
        let (app, device) = (v["app"].as_str().unwrap(), v["device"].as_str().unwrap());
        let exp = v["expires_unix_s"].as_u64().unwrap();
        let expected = v["token"].as_str().unwrap();
        let keys = TokenKeys::new(TokenKey::new(kid, secret.as_bytes()).unwrap());
        let minted = match v["bucket"].as_str() {
            Some(bucket) => keys.mint_in_bucket(app, device, exp, bucket).unwrap(),
            None => keys.mint(app, device, exp),
        };
        assert_eq!(minted, expected, "{name}: mint");
        let claims = keys.verify(expected.as_bytes(), exp - 1).unwrap();
        assert_eq!(
            (
                &*claims.app,
                &*claims.device,
                claims.expires_unix_s,
                &*claims.key_id
            ),
            (app, device, exp, kid),
            "{name}: verify"
        );
        assert_eq!(claims.bucket.as_deref(), v["bucket"].as_str(), "{name}");
        assert!(
            keys.verify(expected.as_bytes(), exp).is_err(),
            "{name}: expired at exp"
        );
        if kid == DEV_TOKEN_KEY_ID {
            assert_eq!(
                secret, DEV_TOKEN_SECRET,
                "{name}: the documented dev secret"
            );
            saw_dev = true;
        }
    }
    assert!(saw_dev, "a vector signed with the development secret");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
