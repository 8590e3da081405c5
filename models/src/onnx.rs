//! Just enough of the ONNX file format (protobuf) to check and adapt model files
//! without ONNX Runtime: an installer confirms that a file is an ONNX model and reads
//! its metadata (YOLO exports say their license and class names there), and
//! [`dynamic_batch`] turns a model exported with a fixed batch of 1 into one that takes
//! any batch, so batched inference can be used and measured with it.
//!
//! Protobuf fields are walked by number (`onnx.proto`): ModelProto 1 ir_version,
//! 7 graph, 14 metadata_props; GraphProto 1 node, 5 initializer, 11 input, 12 output,
//! 13 value_info; NodeProto 1 input, 2 output, 4 op_type, 5 attribute; TensorProto
//! 1 dims, 2 data_type, 7 int64_data, 8 name, 9 raw_data.

use std::collections::{BTreeMap, BTreeSet};

use super::ModelError;

/// One protobuf field value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(&'a [u8]),
    Bytes(&'a [u8]),
    Fixed32(&'a [u8]),
}

fn bad(what: &str) -> ModelError {
    ModelError::new(format!("not an ONNX model: {what}"))
}

fn varint(buf: &[u8], at: &mut usize) -> Result<u64, ModelError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*at).ok_or_else(|| bad("truncated varint"))?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(bad("varint too long"))
}

/// The fields of one message, in order.
fn fields(buf: &[u8]) -> Result<Vec<(u32, Wire<'_>)>, ModelError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let key = varint(buf, &mut at)?;
        let number = u32::try_from(key >> 3).map_err(|_| bad("field number"))?;
        let take = |at: &mut usize, n: usize| -> Result<&[u8], ModelError> {
            let end = at.checked_add(n).filter(|&e| e <= buf.len());
            let end = end.ok_or_else(|| bad("truncated field"))?;
            let s = &buf[*at..end];
            *at = end;
            Ok(s)
        };
        let value = match key & 7 {
            0 => Wire::Varint(varint(buf, &mut at)?),
            1 => Wire::Fixed64(take(&mut at, 8)?),
            2 => {
                let n = usize::try_from(varint(buf, &mut at)?).map_err(|_| bad("length"))?;
                Wire::Bytes(take(&mut at, n)?)
            }
            5 => Wire::Fixed32(take(&mut at, 4)?),
            w => return Err(bad(&format!("unsupported wire type {w}"))),
        };
        if number == 0 {
            return Err(bad("field number 0"));
        }
        out.push((number, value));
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put(out: &mut Vec<u8>, number: u32, value: Wire) {
    let wire = match value {
        Wire::Varint(_) => 0,
        Wire::Fixed64(_) => 1,
        Wire::Bytes(_) => 2,
        Wire::Fixed32(_) => 5,
    };
    put_varint(out, (u64::from(number) << 3) | wire);
    match value {
        Wire::Varint(v) => put_varint(out, v),
        Wire::Fixed64(b) | Wire::Fixed32(b) => out.extend_from_slice(b),
        Wire::Bytes(b) => {
            put_varint(out, b.len() as u64);
            out.extend_from_slice(b);
        }
    }
}

fn string(w: Wire) -> Option<String> {
    match w {
        Wire::Bytes(b) => std::str::from_utf8(b).ok().map(str::to_string),
        _ => None,
    }
}

/// What an installer wants to know about an ONNX file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OnnxInfo {
    pub ir_version: u64,
    /// `metadata_props`: producer-defined key -> value (e.g. `license`, `names`).
    pub metadata: BTreeMap<String, String>,
}

/// Reads the model's IR version and metadata; fails unless the bytes are an ONNX model
/// with a graph.
pub fn inspect(bytes: &[u8]) -> Result<OnnxInfo, ModelError> {
    let mut info = OnnxInfo::default();
    let mut graph = false;
    for (n, v) in fields(bytes)? {
        match (n, v) {
            (1, Wire::Varint(ir)) => info.ir_version = ir,
            (7, Wire::Bytes(_)) => graph = true,
            (14, Wire::Bytes(entry)) => {
                let mut key = None;
                let mut value = None;
                for (n, v) in fields(entry)? {
                    match n {
                        1 => key = string(v),
                        2 => value = string(v),
                        _ => {}
                    }
                }
                if let (Some(k), Some(v)) = (key, value) {
                    info.metadata.insert(k, v);
                }
            }
            _ => {}
        }
    }
    if info.ir_version == 0 || !graph {
        return Err(bad("no IR version or no graph"));
    }
    Ok(info)
}

/// Rewrites a model exported with batch 1 so that it takes any batch: the first
/// dimension of every graph input and output becomes the symbol `batch`, the shape
/// tensors of `Reshape` nodes get a batch-agnostic first entry (`0` = copy the input's
/// first dimension when another entry is already `-1`, else `-1` = infer), and the
/// stored intermediate shapes (`value_info`) are dropped so ONNX Runtime infers them
/// again. This suits exports whose reshapes keep the batch in front (YOLOv8 to v12);
/// compare the outputs with the original's before trusting it for another family.
pub fn dynamic_batch(bytes: &[u8]) -> Result<Vec<u8>, ModelError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut found = false;
    for (n, v) in fields(bytes)? {
        match (n, v) {
            (7, Wire::Bytes(g)) => {
                found = true;
                put(&mut out, 7, Wire::Bytes(&rewrite_graph(g)?));
            }
            _ => put(&mut out, n, v),
        }
    }
    if !found {
        return Err(bad("no graph"));
    }
    Ok(out)
}

fn rewrite_graph(graph: &[u8]) -> Result<Vec<u8>, ModelError> {
    let all = fields(graph)?;
    // Names of the tensors that give Reshape nodes their target shape.
    let mut shapes = BTreeSet::new();
    for (n, v) in &all {
        if let (1, Wire::Bytes(node)) = (*n, *v) {
            let f = fields(node)?;
            let op = f
                .iter()
                .find(|(n, _)| *n == 4)
                .and_then(|(_, v)| string(*v));
            if op.as_deref() == Some("Reshape")
                && let Some(name) = f.iter().filter(|(n, _)| *n == 1).nth(1)
                && let Some(name) = string(name.1)
            {
                shapes.insert(name);
            }
        }
    }
    let mut out = Vec::with_capacity(graph.len());
    let mut changed = 0usize;
    for (n, v) in all {
        match (n, v) {
            (1, Wire::Bytes(node)) => {
                let rewritten = rewrite_constant_node(node, &shapes, &mut changed)?;
                put(
                    &mut out,
                    1,
                    Wire::Bytes(rewritten.as_deref().unwrap_or(node)),
                );
            }
            (5, Wire::Bytes(t)) => {
                let name = fields(t)?
                    .into_iter()
                    .find(|(n, _)| *n == 8)
                    .and_then(|(_, v)| string(v));
                if name.is_some_and(|nm| shapes.contains(&nm)) {
                    put(&mut out, 5, Wire::Bytes(&rewrite_shape_tensor(t)?));
                    changed += 1;
                } else {
                    put(&mut out, 5, v);
                }
            }
            (11 | 12, Wire::Bytes(vi)) => put(&mut out, n, Wire::Bytes(&batch_symbol(vi)?)),
            (13, _) => {}
            _ => put(&mut out, n, v),
        }
    }
    tracing::debug!(reshapes = changed, "made the batch dimension dynamic");
    Ok(out)
}

/// A `Constant` node whose output is a Reshape shape: its `value` tensor rewritten.
fn rewrite_constant_node(
    node: &[u8],
    shapes: &BTreeSet<String>,
    changed: &mut usize,
) -> Result<Option<Vec<u8>>, ModelError> {
    let f = fields(node)?;
    let op = f
        .iter()
        .find(|(n, _)| *n == 4)
        .and_then(|(_, v)| string(*v));
    let output = f
        .iter()
        .find(|(n, _)| *n == 2)
        .and_then(|(_, v)| string(*v));
    if op.as_deref() != Some("Constant") || !output.is_some_and(|o| shapes.contains(&o)) {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(node.len());
    for (n, v) in f {
        match (n, v) {
            (5, Wire::Bytes(attr)) => {
                let mut a = Vec::with_capacity(attr.len());
                for (an, av) in fields(attr)? {
                    match (an, av) {
                        (5, Wire::Bytes(t)) => {
                            put(&mut a, 5, Wire::Bytes(&rewrite_shape_tensor(t)?));
                            *changed += 1;
                        }
                        _ => put(&mut a, an, av),
                    }
                }
                put(&mut out, 5, Wire::Bytes(&a));
            }
            _ => put(&mut out, n, v),
        }
    }
    Ok(Some(out))
}

/// An int64 shape tensor with its first entry made batch-agnostic.
fn rewrite_shape_tensor(t: &[u8]) -> Result<Vec<u8>, ModelError> {
    const INT64: u64 = 7;
    let f = fields(t)?;
    let dtype = f.iter().find_map(|(n, v)| match (n, v) {
        (2, Wire::Varint(d)) => Some(*d),
        _ => None,
    });
    if dtype != Some(INT64) {
        return Err(bad("a Reshape shape that is not int64"));
    }
    let mut values: Vec<i64> = Vec::new();
    let mut raw = false;
    for (n, v) in &f {
        match (*n, *v) {
            (9, Wire::Bytes(b)) => {
                raw = true;
                values = b
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect();
            }
            (7, Wire::Bytes(packed)) => {
                let mut at = 0;
                while at < packed.len() {
                    values.push(varint(packed, &mut at)? as i64);
                }
            }
            (7, Wire::Varint(x)) => values.push(x as i64),
            _ => {}
        }
    }
    let Some(first) = values.first().copied() else {
        return Err(bad("an empty Reshape shape"));
    };
    let infers = values[1..].contains(&-1);
    values[0] = match (infers, first) {
        (false, _) => -1,
        (true, 1) => 0,
        (true, _) => {
            return Err(ModelError::new(format!(
                "cannot make the batch dynamic: a Reshape to {values:?} folds the batch into another dimension"
            )));
        }
    };
    let mut out = Vec::with_capacity(t.len());
    let mut written = false;
    for (n, v) in f {
        match n {
            7 | 9 => {
                if !written {
                    written = true;
                    if raw {
                        let b: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
                        put(&mut out, 9, Wire::Bytes(&b));
                    } else {
                        let mut p = Vec::new();
                        for x in &values {
                            put_varint(&mut p, *x as u64);
                        }
                        put(&mut out, 7, Wire::Bytes(&p));
                    }
                }
            }
            _ => put(&mut out, n, v),
        }
    }
    Ok(out)
}

/// A graph input or output (ValueInfoProto) whose first dimension becomes `batch`.
fn batch_symbol(vi: &[u8]) -> Result<Vec<u8>, ModelError> {
    // ValueInfoProto.type(2) -> TypeProto.tensor_type(1) -> shape(2) -> dim(1)[0].
    fn nested(buf: &[u8], path: &[u32]) -> Result<Vec<u8>, ModelError> {
        let Some((&want, rest)) = path.split_first() else {
            // The Dimension itself: dim_param (2) = "batch".
            let mut d = Vec::new();
            put(&mut d, 2, Wire::Bytes(b"batch"));
            return Ok(d);
        };
        let mut out = Vec::with_capacity(buf.len() + 8);
        let mut done = false;
        for (n, v) in fields(buf)? {
            match (n, v) {
                (n, Wire::Bytes(inner)) if n == want && !done => {
                    done = true;
                    put(&mut out, n, Wire::Bytes(&nested(inner, rest)?));
                }
                _ => put(&mut out, n, v),
            }
        }
        Ok(out)
    }
    nested(vi, &[2, 1, 2, 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(fields: &[(u32, Wire)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in fields {
            put(&mut out, *n, *v);
        }
        out
    }

    fn shape_tensor(name: &str, values: &[i64]) -> Vec<u8> {
        let raw: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        msg(&[
            (1, Wire::Varint(values.len() as u64)),
            (2, Wire::Varint(7)),
            (8, Wire::Bytes(name.as_bytes())),
            (9, Wire::Bytes(&raw)),
        ])
    }

    fn value_info(name: &str, dims: &[u64]) -> Vec<u8> {
        let mut shape = Vec::new();
        for d in dims {
            put(&mut shape, 1, Wire::Bytes(&msg(&[(1, Wire::Varint(*d))])));
        }
        let tensor = msg(&[(1, Wire::Varint(1)), (2, Wire::Bytes(&shape))]);
        let ty = msg(&[(1, Wire::Bytes(&tensor))]);
        msg(&[(1, Wire::Bytes(name.as_bytes())), (2, Wire::Bytes(&ty))])
    }

    fn model() -> Vec<u8> {
        let reshape = msg(&[
            (1, Wire::Bytes(b"x")),
            (1, Wire::Bytes(b"s1")),
            (2, Wire::Bytes(b"y")),
            (4, Wire::Bytes(b"Reshape")),
        ]);
        let reshape2 = msg(&[
            (1, Wire::Bytes(b"y")),
            (1, Wire::Bytes(b"s2")),
            (2, Wire::Bytes(b"z")),
            (4, Wire::Bytes(b"Reshape")),
        ]);
        let graph = msg(&[
            (1, Wire::Bytes(&reshape)),
            (1, Wire::Bytes(&reshape2)),
            (5, Wire::Bytes(&shape_tensor("s1", &[1, 192, -1]))),
            (5, Wire::Bytes(&shape_tensor("s2", &[4, 400, 2, 96]))),
            (5, Wire::Bytes(&shape_tensor("other", &[1, 2]))),
            (11, Wire::Bytes(&value_info("images", &[1, 3, 640, 640]))),
            (12, Wire::Bytes(&value_info("output0", &[1, 84, 8400]))),
            (13, Wire::Bytes(&value_info("tmp", &[1, 2]))),
        ]);
        let meta = msg(&[
            (1, Wire::Bytes(b"license")),
            (2, Wire::Bytes(b"AGPL-3.0 License")),
        ]);
        msg(&[
            (1, Wire::Varint(9)),
            (7, Wire::Bytes(&graph)),
            (14, Wire::Bytes(&meta)),
        ])
    }

    fn tensor_values(t: &[u8]) -> Vec<i64> {
        let f = fields(t).unwrap();
        let raw = f.iter().find(|(n, _)| *n == 9).unwrap().1;
        let Wire::Bytes(b) = raw else { panic!() };
        b.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn reads_metadata_and_refuses_non_onnx() {
        let info = inspect(&model()).unwrap();
        assert_eq!(info.ir_version, 9);
        assert_eq!(info.metadata["license"], "AGPL-3.0 License");
        assert!(inspect(b"GGML not onnx at all").is_err());
        assert!(inspect(b"").is_err());
    }

    #[test]
    fn makes_the_batch_dynamic() {
        let out = dynamic_batch(&model()).unwrap();
        let top = fields(&out).unwrap();
        let Wire::Bytes(g) = top.iter().find(|(n, _)| *n == 7).unwrap().1 else {
            panic!()
        };
        let g = fields(g).unwrap();
        let tensors: BTreeMap<String, Vec<i64>> = g
            .iter()
            .filter(|(n, _)| *n == 5)
            .map(|(_, v)| {
                let Wire::Bytes(t) = v else { panic!() };
                let name = fields(t)
                    .unwrap()
                    .into_iter()
                    .find(|(n, _)| *n == 8)
                    .and_then(|(_, v)| string(v))
                    .unwrap();
                (name, tensor_values(t))
            })
            .collect();
        assert_eq!(tensors["s1"], vec![0, 192, -1]);
        assert_eq!(tensors["s2"], vec![-1, 400, 2, 96]);
        assert_eq!(tensors["other"], vec![1, 2], "not a Reshape shape");
        assert!(g.iter().all(|(n, _)| *n != 13), "value_info dropped");
        let input = g.iter().find(|(n, _)| *n == 11).unwrap().1;
        let Wire::Bytes(vi) = input else { panic!() };
        let again = value_info("images", &[1, 3, 640, 640]);
        assert_ne!(vi, again.as_slice());
        assert!(
            vi.windows(5).any(|w| w == b"batch"),
            "first dim is the symbol"
        );
        // Metadata survives.
        assert_eq!(
            inspect(&out).unwrap().metadata["license"],
            "AGPL-3.0 License"
        );
    }
}
