//! Host calls the SDK does not offer as the filter needs them, and the filter's `unsafe`.
//!
//! proxy-wasm-rust-sdk's `send_http_response` passes an empty response-code detail, so
//! refusals would be anonymous in Envoy's access logs; the ABI call itself takes one. And the
//! SDK turns a header map into two allocations per header; read in place it costs none.

use crate::reply::LocalReply;
use crate::request::header_map::HeaderMap;
use proxy_wasm::types::{MapType, Status};

/// Sends `reply` as Envoy's local reply, with its response-code detail.
pub fn send_local_reply(reply: &LocalReply) {
    let headers = serialize_headers(&[("content-type", reply.content_type)]);
    let (detail, body) = (reply.detail.as_bytes(), reply.body.as_bytes());
    // SAFETY: every pointer and length describes a live slice for the duration of the call,
    // and the host only reads them.
    let status = unsafe {
        proxy_send_local_response(
            reply.status,
            detail.as_ptr(),
            detail.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    };
    if status != Status::Ok {
        log::error!("local reply failed: {status:?}");
    }
}

/// Every header of `map` in one host call, left serialized (see [`HeaderMap`]).
pub fn header_map(map: MapType) -> HeaderMap {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size = 0usize;
    // SAFETY: the host writes a pointer to `size` bytes it allocated in this VM's memory
    // through the module's allocator, which hands their ownership to us, so the Vec may own
    // and free them; a null pointer means no map.
    unsafe {
        if proxy_get_header_map_pairs(map, &mut data, &mut size) != Status::Ok || data.is_null() {
            return HeaderMap::default();
        }
        HeaderMap(Vec::from_raw_parts(data, size, size))
    }
}

/// Bytes of the VM's linear memory, which only grows: a value that stays flat under ever
/// larger bodies shows the filter does not keep them.
#[cfg(target_arch = "wasm32")]
pub fn linear_memory_bytes() -> u64 {
    core::arch::wasm32::memory_size::<0>() as u64 * 65536
}

/// The host layer is also compiled natively, for clippy only; it never runs there.
#[cfg(not(target_arch = "wasm32"))]
pub fn linear_memory_bytes() -> u64 {
    0
}

/// The proxy-wasm header map encoding: count, then each name and value length, then each
/// name and value followed by a NUL.
fn serialize_headers(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (name, value) in headers {
        bytes.extend_from_slice(&(name.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in headers {
        for part in [name, value] {
            bytes.extend_from_slice(part.as_bytes());
            bytes.push(0);
        }
    }
    bytes
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;

    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> Status;
}
