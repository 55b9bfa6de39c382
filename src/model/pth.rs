//! PyTorch `.pth` state dicts, both layouts: the zip archive of PyTorch >= 1.6 (candle reads
//! it) and the legacy layout of older releases, read here with candle's unpickler.
//!
//! The legacy layout is a row of pickles: a magic number, the protocol version, system info, the
//! state dict (each tensor's storage a persistent id `('storage', type, key, location, numel)`),
//! the list of storage keys; then each storage in that order, as a little-endian `u64` element
//! count followed by its raw little-endian elements.

use std::collections::HashMap;
use std::io::{BufRead, Cursor};

use candle_core::pickle::{Object, Stack};
use candle_core::{Device, Tensor};

/// The first pickle of a legacy file: protocol 2, `LONG1` of the magic number
/// 0x1950a86a20f9469cfc6c, `STOP`.
const LEGACY_MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e";

/// Whether `bytes` start like a `.pth` file of either layout.
pub(crate) fn is_pth(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(LEGACY_MAGIC)
}

/// Every tensor of the state dict in `bytes` (the content of `path`), by name; the error says
/// what is wrong with the file.
pub(crate) fn read(
    path: &std::path::Path,
    bytes: &[u8],
) -> Result<HashMap<String, Tensor>, String> {
    if bytes.starts_with(LEGACY_MAGIC) {
        read_legacy(&bytes[LEGACY_MAGIC.len()..])
    } else {
        candle_core::pickle::read_all(path)
            .map(|tensors| tensors.into_iter().collect())
            .map_err(|e| e.to_string())
    }
}

fn unpickle(reader: &mut impl BufRead, what: &str) -> Result<Object, String> {
    let mut stack = Stack::empty();
    stack
        .read_loop(reader)
        .and_then(|()| stack.finalize())
        .map_err(|e| format!("{what}: {e}"))
}

fn read_legacy(rest: &[u8]) -> Result<HashMap<String, Tensor>, String> {
    let mut reader = Cursor::new(rest);
    unpickle(&mut reader, "protocol version")?;
    unpickle(&mut reader, "system info")?;
    let state = unpickle(&mut reader, "state dict")?;
    let keys = match unpickle(&mut reader, "storage keys")? {
        Object::List(keys) => keys
            .into_iter()
            .map(|k| k.unicode().map_err(|k| format!("storage key {k:?}")))
            .collect::<Result<Vec<String>, String>>()?,
        other => return Err(format!("storage keys: a list expected, found {other:?}")),
    };
    let entries = match state {
        Object::Dict(entries) => entries,
        // An OrderedDict with `_metadata` attached: BUILD on the dict.
        Object::Build { callable, .. } => match *callable {
            Object::Dict(entries) => entries,
            other => return Err(format!("state dict: a dict expected, found {other:?}")),
        },
        other => return Err(format!("state dict: a dict expected, found {other:?}")),
    };
    let mut infos = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        let shown = format!("{name:?}");
        if let Some(info) = value
            .into_tensor_info(name, std::path::Path::new(""))
            .map_err(|e| format!("tensor {shown}: {e}"))?
        {
            infos.push(info);
        }
    }
    // The storages follow in the order of `keys`, each prefixed by its element count.
    let mut storages: HashMap<String, &[u8]> = HashMap::with_capacity(keys.len());
    let mut offset = reader.position() as usize;
    for key in keys {
        let count = rest
            .get(offset..offset + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
            .ok_or_else(|| format!("storage {key}: the file ends before its length"))?;
        let element = infos
            .iter()
            .find(|i| i.path.trim_start_matches('/') == key)
            .map_or(1, |i| i.dtype.size_in_bytes());
        let len = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(element))
            .ok_or_else(|| format!("storage {key}: {count} elements is too many"))?;
        let start = offset + 8;
        let data = rest
            .get(start..start.saturating_add(len))
            .ok_or_else(|| format!("storage {key}: the file ends inside its {len} bytes"))?;
        storages.insert(key, data);
        offset = start + len;
    }
    let mut tensors = HashMap::with_capacity(infos.len());
    for info in infos {
        let key = info.path.trim_start_matches('/');
        let storage = storages
            .get(key)
            .ok_or_else(|| format!("tensor {}: storage {key} is not in the file", info.name))?;
        // Weights converted from TensorFlow are often stored permuted (e.g. HWIO strides), so
        // elements are gathered by their strides into row-major order.
        let dims = info.layout.dims();
        let strides = info.layout.stride();
        let element = info.dtype.size_in_bytes();
        let count = info.layout.shape().elem_count();
        let mut data = Vec::with_capacity(count * element);
        let mut index = vec![0usize; dims.len()];
        for _ in 0..count {
            let at = info.layout.start_offset()
                + index.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>() * element;
            let bytes = storage.get(at..at + element).ok_or_else(|| {
                format!(
                    "tensor {}: element at byte {at} is outside its storage",
                    info.name
                )
            })?;
            data.extend_from_slice(bytes);
            // Next row-major index.
            for d in (0..dims.len()).rev() {
                index[d] += 1;
                if index[d] < dims[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        let tensor = Tensor::from_raw_buffer(&data, info.dtype, dims, &Device::Cpu)
            .map_err(|e| format!("tensor {}: {e}", info.name))?;
        tensors.insert(info.name, tensor);
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_legacy_file_cut_after_the_magic_is_refused() {
        let error = read(std::path::Path::new("x.pth"), LEGACY_MAGIC).unwrap_err();
        assert!(error.contains("protocol version"), "{error}");
    }
}
