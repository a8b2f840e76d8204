//! A header map as the proxy-wasm host serializes it (one host call for every header),
//! looked up in place: a little-endian u32 count, then each name's and value's u32 length,
//! then each name and value followed by a NUL. Reading it this way costs one allocation (the
//! host's answer) where the SDK's map makes two per header.

use super::RequestHeaders;

/// A serialized header map; malformed bytes read as a map without the header asked for.
#[derive(Debug, Default)]
pub struct HeaderMap(pub Vec<u8>);

impl HeaderMap {
    fn u32_at(&self, at: usize) -> Option<usize> {
        let bytes = self.0.get(at..at + 4)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?) as usize)
    }
}

impl RequestHeaders for HeaderMap {
    fn header(&self, name: &str) -> Option<&[u8]> {
        let count = self.u32_at(0)?;
        let mut data = 4 + count.checked_mul(8)?;
        for index in 0..count {
            let name_len = self.u32_at(4 + index * 8)?;
            let value_len = self.u32_at(8 + index * 8)?;
            let value_at = data.checked_add(name_len)?.checked_add(1)?;
            let end = value_at.checked_add(value_len)?;
            if self.0.get(data..data + name_len)? == name.as_bytes() {
                return self.0.get(value_at..end);
            }
            data = end.checked_add(1)?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serialize(headers: &[(&str, &str)]) -> Vec<u8> {
        let mut bytes = (headers.len() as u32).to_le_bytes().to_vec();
        for (name, value) in headers {
            bytes.extend((name.len() as u32).to_le_bytes());
            bytes.extend((value.len() as u32).to_le_bytes());
        }
        for (name, value) in headers {
            for part in [name, value] {
                bytes.extend(part.as_bytes());
                bytes.push(0);
            }
        }
        bytes
    }

    #[test]
    fn finds_each_header_and_the_first_of_repeated_ones() {
        let map = HeaderMap(serialize(&[
            (":path", "/v1/chat/completions"),
            ("content-length", "42"),
            ("x-ai-eg-model", "a"),
            ("x-ai-eg-model", "b"),
            ("empty", ""),
        ]));
        assert_eq!(map.header(":path"), Some(&b"/v1/chat/completions"[..]));
        assert_eq!(map.header("content-length"), Some(&b"42"[..]));
        assert_eq!(map.header("x-ai-eg-model"), Some(&b"a"[..]));
        assert_eq!(map.header("empty"), Some(&b""[..]));
        assert_eq!(map.header("content-type"), None);
        assert_eq!(map.header(":pat"), None);
    }

    #[test]
    fn truncated_or_lying_maps_find_nothing_and_never_panic() {
        let whole = serialize(&[(":path", "/v1/models"), ("a", "b")]);
        // Up to the last value's final byte (only its closing NUL may be missing).
        for cut in 0..whole.len() - 1 {
            let map = HeaderMap(whole[..cut].to_vec());
            let _ = map.header(":path");
            assert_eq!(map.header("a"), None, "cut at {cut}");
        }
        let mut lying = whole.clone();
        lying[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(HeaderMap(lying).header("a"), None);
        assert_eq!(HeaderMap::default().header(":path"), None);
    }
}
