//! [`DeviceKey`]: who a logged-in connection is, (app id, device id), in one shared
//! allocation.
//!
//! The two ids are stored joined as `{app length}:{app}{device}` (the app's length in
//! decimal). The length prefix makes the joined string name exactly one (app, device)
//! pair, so a key hashes and compares as that string alone, and maps keyed by
//! `DeviceKey` can be searched with a `&str` ([`Borrow<str>`]). [`DeviceKey::with_joined`]
//! builds that string on the stack, so looking a device up (once per target of every
//! batched push) allocates nothing.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Joined keys up to this many bytes are built on the stack for a lookup.
const STACK_KEY: usize = 128;

/// Who a logged-in connection is: its (app id, device id), in one shared allocation so
/// the hub and the connection's driver hold it for the price of a pointer (16 bytes:
/// the app id's length is written in front, not kept in a field of its own).
#[derive(Clone)]
pub struct DeviceKey {
    joined: Arc<str>,
}

/// Writes `n` in decimal at the start of `out`; returns the number of digits.
fn write_decimal(mut n: usize, out: &mut [u8]) -> usize {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (i, d) in digits[..len].iter().rev().enumerate() {
        out[i] = *d;
    }
    len
}

/// Writes the joined form of (app, device) into `out` (which must be long enough);
/// returns its length.
fn write_joined(app: &str, device: &str, out: &mut [u8]) -> usize {
    let digits = write_decimal(app.len(), out);
    out[digits] = b':';
    let app_start = digits + 1;
    let device_start = app_start + app.len();
    out[app_start..device_start].copy_from_slice(app.as_bytes());
    let end = device_start + device.len();
    out[device_start..end].copy_from_slice(device.as_bytes());
    end
}

/// Length of the joined form of (app, device).
fn joined_len(app: &str, device: &str) -> usize {
    let mut digits = 1;
    let mut n = app.len() / 10;
    while n > 0 {
        digits += 1;
        n /= 10;
    }
    digits + 1 + app.len() + device.len()
}

impl DeviceKey {
    /// The key for (app, device), in one allocation: the joined string is built on the
    /// stack when short (the common case) and copied once into the shared one.
    pub fn new(app: &str, device: &str) -> DeviceKey {
        let len = joined_len(app, device);
        let joined: Arc<str> = if len <= STACK_KEY {
            let mut buf = [0u8; STACK_KEY];
            write_joined(app, device, &mut buf);
            Arc::from(std::str::from_utf8(&buf[..len]).expect("digits, ':' and two str"))
        } else {
            let mut bytes = vec![0u8; len];
            write_joined(app, device, &mut bytes);
            String::from_utf8(bytes)
                .expect("digits, ':' and two str are UTF-8")
                .into()
        };
        DeviceKey { joined }
    }

    /// Calls `f` with the string a `DeviceKey::new(app, device)` hashes and compares as,
    /// built on the stack when it is short (the common case): for lookups in maps keyed
    /// by `DeviceKey`, without allocating a key.
    pub fn with_joined<R>(app: &str, device: &str, f: impl FnOnce(&str) -> R) -> R {
        let len = joined_len(app, device);
        if len <= STACK_KEY {
            let mut buf = [0u8; STACK_KEY];
            write_joined(app, device, &mut buf);
            let joined = std::str::from_utf8(&buf[..len]).expect("digits, ':' and two str");
            f(joined)
        } else {
            f(&DeviceKey::new(app, device).joined)
        }
    }

    /// Where the app id starts and ends in `joined`: after the decimal length and its
    /// `:` (the first `:`, as the prefix is digits; ids may hold `:` themselves).
    fn app_range(&self) -> (usize, usize) {
        let bytes = self.joined.as_bytes();
        let mut len = 0usize;
        let mut at = 0;
        while let Some(&d) = bytes.get(at).filter(|d| d.is_ascii_digit()) {
            len = len * 10 + usize::from(d - b'0');
            at += 1;
        }
        (at + 1, at + 1 + len)
    }

    /// The app id.
    pub fn app(&self) -> &str {
        let (start, end) = self.app_range();
        &self.joined[start..end]
    }

    /// The device id.
    pub fn device(&self) -> &str {
        &self.joined[self.app_range().1..]
    }
}

impl PartialEq for DeviceKey {
    fn eq(&self, other: &DeviceKey) -> bool {
        self.joined == other.joined
    }
}

impl Eq for DeviceKey {}

/// Hashes as its joined string, the same as the `&str` of [`DeviceKey::with_joined`].
impl Hash for DeviceKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.joined.hash(state);
    }
}

impl Borrow<str> for DeviceKey {
    fn borrow(&self) -> &str {
        &self.joined
    }
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.app(), self.device())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn the_ids_come_back_and_the_split_is_part_of_the_key() {
        let key = DeviceKey::new("app", "phone");
        assert_eq!((key.app(), key.device()), ("app", "phone"));
        // The same bytes split differently are different keys.
        let (a, b) = (DeviceKey::new("ab", "c"), DeviceKey::new("a", "bc"));
        assert_ne!(a, b);
        assert_eq!((b.app(), b.device()), ("a", "bc"));
        let empty = DeviceKey::new("", "");
        assert_eq!((empty.app(), empty.device()), ("", ""));
        let long_app = "x".repeat(1234);
        let long = DeviceKey::new(&long_app, "d");
        assert_eq!((long.app(), long.device()), (long_app.as_str(), "d"));
        // Either side of the stack buffer's length ("3:app" is 5 bytes).
        for len in [STACK_KEY - 6, STACK_KEY - 5, STACK_KEY - 4] {
            let device = "d".repeat(len);
            let key = DeviceKey::new("app", &device);
            assert_eq!((key.app(), key.device()), ("app", device.as_str()));
            assert_eq!(key.joined.len(), 5 + len);
        }
    }

    #[test]
    fn a_map_of_keys_is_searched_by_the_joined_string_short_or_long() {
        let long_device = "d".repeat(STACK_KEY + 10);
        let mut map = HashMap::new();
        map.insert(DeviceKey::new("app", "phone"), 1);
        map.insert(DeviceKey::new("ap", "pphone"), 2);
        map.insert(DeviceKey::new("app", &long_device), 3);
        let find = |app: &str, device: &str| {
            DeviceKey::with_joined(app, device, |joined| map.get(joined).copied())
        };
        assert_eq!(find("app", "phone"), Some(1));
        assert_eq!(find("ap", "pphone"), Some(2));
        assert_eq!(find("app", &long_device), Some(3));
        assert_eq!(find("a", "ppphone"), None);
        assert_eq!(find("app", "tablet"), None);
    }

    #[test]
    fn decimal_lengths_have_every_digit() {
        for n in [0, 7, 9, 10, 99, 100, 65_535, usize::MAX] {
            let mut out = [0u8; 20];
            let len = write_decimal(n, &mut out);
            assert_eq!(std::str::from_utf8(&out[..len]).unwrap(), n.to_string());
        }
        assert_eq!(joined_len("abcdefghij", "d"), "10:abcdefghij".len() + 1);
    }
}
