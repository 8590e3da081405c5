//! Reader (and, for tests, writer) of CTranslate2's `model.bin`, the format
//! faster-whisper models ship in.
//!
//! Layout (little-endian): u32 binary version, string spec name, u32 spec revision,
//! u32 variable count; each variable is a string name, u8 rank, rank x u32 dims, u8
//! dtype, u32 byte count and the raw data; then u32 alias count and (alias, target)
//! string pairs. A string is a u16 length that counts a trailing NUL, then the bytes.

use std::collections::BTreeMap;
use std::ops::Range;

use super::ModelError;

/// Element types of CTranslate2 variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl DType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => DType::F32,
            1 => DType::I8,
            2 => DType::I16,
            3 => DType::I32,
            4 => DType::F16,
            5 => DType::BF16,
            _ => return None,
        })
    }

    pub fn code(self) -> u8 {
        match self {
            DType::F32 => 0,
            DType::I8 => 1,
            DType::I16 => 2,
            DType::I32 => 3,
            DType::F16 => 4,
            DType::BF16 => 5,
        }
    }

    pub fn size(self) -> usize {
        match self {
            DType::I8 => 1,
            DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 => 4,
        }
    }
}

/// One variable: dims, element type, and where its bytes are in the file.
#[derive(Debug, Clone)]
pub struct Variable {
    pub dims: Vec<usize>,
    pub dtype: DType,
    range: Range<usize>,
}

impl Variable {
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A parsed `model.bin` (its bytes stay in memory; variables point into them).
pub struct Ct2Model {
    pub binary_version: u32,
    pub spec: String,
    pub revision: u32,
    bytes: Vec<u8>,
    vars: BTreeMap<String, Variable>,
    aliases: BTreeMap<String, String>,
}

impl std::fmt::Debug for Ct2Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ct2Model")
            .field("spec", &self.spec)
            .field("revision", &self.revision)
            .field("variables", &self.vars.len())
            .finish()
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<Range<usize>, ModelError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| {
                ModelError::new(format!(
                    "truncated at byte {} (wanted {n} more, file has {})",
                    self.at,
                    self.b.len()
                ))
            })?;
        let r = self.at..end;
        self.at = end;
        Ok(r)
    }

    fn u8(&mut self) -> Result<u8, ModelError> {
        let r = self.take(1)?;
        Ok(self.b[r.start])
    }

    fn u16(&mut self) -> Result<u16, ModelError> {
        let r = self.take(2)?;
        Ok(u16::from_le_bytes(self.b[r].try_into().expect("2 bytes")))
    }

    fn u32(&mut self) -> Result<u32, ModelError> {
        let r = self.take(4)?;
        Ok(u32::from_le_bytes(self.b[r].try_into().expect("4 bytes")))
    }

    fn string(&mut self) -> Result<String, ModelError> {
        let n = self.u16()? as usize;
        let r = self.take(n)?;
        let s = &self.b[r];
        let s = s.strip_suffix(&[0]).unwrap_or(s);
        String::from_utf8(s.to_vec())
            .map_err(|_| ModelError::new(format!("a name at byte {} is not UTF-8", self.at)))
    }
}

/// Sanity bounds so garbage input fails fast instead of allocating wildly.
const MAX_VARS: u32 = 100_000;
const MAX_RANK: u8 = 8;

impl Ct2Model {
    /// Parses the bytes of a `model.bin`.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, ModelError> {
        let not = |e: ModelError| e.context("not a CTranslate2 model.bin");
        let mut c = Cursor { b: &bytes, at: 0 };
        let binary_version = c.u32().map_err(not)?;
        if !(1..=100).contains(&binary_version) {
            return Err(not(ModelError::new(format!(
                "binary version {binary_version}"
            ))));
        }
        let spec = c.string().map_err(not)?;
        let revision = c.u32().map_err(not)?;
        let n = c.u32().map_err(not)?;
        if n > MAX_VARS {
            return Err(not(ModelError::new(format!("{n} variables"))));
        }
        let mut vars = BTreeMap::new();
        for _ in 0..n {
            let name = c.string().map_err(not)?;
            let rank = c.u8().map_err(not)?;
            if rank > MAX_RANK {
                return Err(not(ModelError::new(format!(
                    "variable {name} has rank {rank}"
                ))));
            }
            let dims = (0..rank)
                .map(|_| c.u32().map(|d| d as usize))
                .collect::<Result<Vec<_>, _>>()
                .map_err(not)?;
            let code = c.u8().map_err(not)?;
            let dtype = DType::from_u8(code)
                .ok_or_else(|| not(ModelError::new(format!("variable {name} has dtype {code}"))))?;
            let nbytes = c.u32().map_err(not)? as usize;
            let want = dims.iter().product::<usize>() * dtype.size();
            if nbytes != want {
                return Err(not(ModelError::new(format!(
                    "variable {name} {dims:?} has {nbytes} bytes, expected {want}"
                ))));
            }
            let range = c
                .take(nbytes)
                .map_err(|e| not(e.context(format!("variable {name}"))))?;
            vars.insert(name, Variable { dims, dtype, range });
        }
        let mut aliases = BTreeMap::new();
        if c.at < bytes.len() {
            let na = c.u32()?;
            for _ in 0..na.min(MAX_VARS) {
                let alias = c.string()?;
                let target = c.string()?;
                aliases.insert(alias, target);
            }
        }
        Ok(Ct2Model {
            binary_version,
            spec,
            revision,
            bytes,
            vars,
            aliases,
        })
    }

    /// A variable by name (aliases resolved).
    pub fn get(&self, name: &str) -> Option<&Variable> {
        self.vars
            .get(name)
            .or_else(|| self.aliases.get(name).and_then(|t| self.vars.get(t)))
    }

    /// A variable that must exist.
    pub fn var(&self, name: &str) -> Result<&Variable, ModelError> {
        self.get(name).ok_or_else(|| {
            ModelError::new(format!("the CTranslate2 model has no variable '{name}'"))
        })
    }

    pub fn data(&self, v: &Variable) -> &[u8] {
        &self.bytes[v.range.clone()]
    }

    /// An integer scalar (`encoder/num_heads`).
    pub fn scalar(&self, name: &str) -> Result<i64, ModelError> {
        let v = self.var(name)?;
        let d = self.data(v);
        let bad = || ModelError::new(format!("'{name}' is not an integer scalar"));
        if v.len() != 1 {
            return Err(bad());
        }
        Ok(match v.dtype {
            DType::I8 => d[0] as i8 as i64,
            DType::I16 => i16::from_le_bytes([d[0], d[1]]) as i64,
            DType::I32 => i32::from_le_bytes([d[0], d[1], d[2], d[3]]) as i64,
            _ => return Err(bad()),
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.keys().map(String::as_str)
    }
}

/// Builds a `model.bin` (for tests and tools): variables as (name, dims, dtype, bytes).
pub fn encode(
    spec: &str,
    revision: u32,
    vars: &[(String, Vec<usize>, DType, Vec<u8>)],
    aliases: &[(&str, &str)],
) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&6u32.to_le_bytes());
    string(&mut out, spec);
    out.extend_from_slice(&revision.to_le_bytes());
    out.extend_from_slice(&(vars.len() as u32).to_le_bytes());
    for (name, dims, dtype, data) in vars {
        string(&mut out, name);
        out.push(dims.len() as u8);
        for d in dims {
            out.extend_from_slice(&(*d as u32).to_le_bytes());
        }
        out.push(dtype.code());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }
    out.extend_from_slice(&(aliases.len() as u32).to_le_bytes());
    for (a, t) in aliases {
        string(&mut out, a);
        string(&mut out, t);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_variables_scalars_and_aliases() {
        let bytes = encode(
            "WhisperSpec",
            3,
            &[
                ("a/w".into(), vec![2, 3], DType::F32, vec![0u8; 24]),
                (
                    "a/num_heads".into(),
                    vec![],
                    DType::I16,
                    6i16.to_le_bytes().to_vec(),
                ),
            ],
            &[("a/proj", "a/w")],
        );
        let m = Ct2Model::parse(bytes).unwrap();
        assert_eq!(m.spec, "WhisperSpec");
        assert_eq!(m.revision, 3);
        assert_eq!(m.var("a/w").unwrap().dims, vec![2, 3]);
        assert_eq!(m.var("a/proj").unwrap().dims, vec![2, 3]);
        assert_eq!(m.scalar("a/num_heads").unwrap(), 6);
        assert!(m.var("b").is_err());
    }

    #[test]
    fn rejects_truncated_and_foreign_files() {
        let mut bytes = encode(
            "WhisperSpec",
            3,
            &[("w".into(), vec![4], DType::F16, vec![0u8; 8])],
            &[],
        );
        bytes.truncate(bytes.len() - 6);
        let e = Ct2Model::parse(bytes).unwrap_err();
        assert!(e.message.contains("not a CTranslate2 model.bin"), "{e}");
        assert!(e.message.contains("truncated"), "{e}");
        let e = Ct2Model::parse(b"\x6c\x6d\x67\x67garbage garbage".to_vec()).unwrap_err();
        assert!(e.message.contains("not a CTranslate2"), "{e}");
        assert!(Ct2Model::parse(Vec::new()).is_err());
    }
}
