//! A reader of MATLAB's MAT-file format version 5 (what MATLAB's `save` writes up to `-v7`, and
//! `scipy.io.savemat`), enough for the ILSVRC2012 devkit's `meta.mat`: numeric, logical, char,
//! struct and cell arrays, zlib-compressed variables, both byte orders, and MATLAB's habit of
//! storing doubles in the smallest integer type that holds them. Sparse and object arrays are an
//! error naming the class; v7.3 files (HDF5) are refused.
//!
//! No crate fits: `matfile` reads numeric arrays only (no struct or char), and `matrw` takes a
//! path (not bytes from inside an archive) and panics on malformed input. Every length here is
//! checked against the bytes present, nesting is limited and decompression is capped, so a
//! damaged file is an error, never a panic or a huge allocation.
use std::io::Read;

/// Largest decompressed variable accepted (256 MiB; the devkit's `meta.mat` is a few MB).
const MAX_INFLATED: u64 = 256 << 20;
/// Deepest nesting of struct and cell arrays accepted.
const MAX_DEPTH: usize = 32;

// data types of the file's elements (MAT-file format, table 1-1)
const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;
const MI_UTF16: u32 = 17;
const MI_UTF32: u32 = 18;

// array classes (table 1-3)
const MX_CELL: u32 = 1;
const MX_STRUCT: u32 = 2;
const MX_CHAR: u32 = 4;

/// One MATLAB array. Elements are in MATLAB's column-major order.
#[derive(Clone, Debug, PartialEq)]
pub enum MatValue {
    /// A numeric or logical array (real part), every value as `f64`.
    Numeric { dims: Vec<usize>, data: Vec<f64> },
    /// A char array.
    Char { dims: Vec<usize>, chars: Vec<char> },
    /// A struct array: `elements[i][f]` is field `fields[f]` of element `i`.
    Struct { dims: Vec<usize>, fields: Vec<String>, elements: Vec<Vec<MatValue>> },
    /// A cell array.
    Cell { dims: Vec<usize>, elements: Vec<MatValue> },
}

impl MatValue {
    /// The single value of a 1-element numeric array.
    pub fn as_scalar(&self) -> Option<f64> {
        match self {
            MatValue::Numeric { data, .. } if data.len() == 1 => Some(data[0]),
            _ => None,
        }
    }

    /// The text of a char array with one row (or an empty one).
    pub fn as_string(&self) -> Option<String> {
        match self {
            MatValue::Char { dims, chars } if dims.iter().filter(|&&d| d > 1).count() <= 1 => {
                Some(chars.iter().collect())
            }
            _ => None,
        }
    }

    /// Number of elements of a struct or cell array (the product of its dimensions).
    pub fn len(&self) -> usize {
        match self {
            MatValue::Numeric { data, .. } => data.len(),
            MatValue::Char { chars, .. } => chars.len(),
            MatValue::Struct { elements, .. } => elements.len(),
            MatValue::Cell { elements, .. } => elements.len(),
        }
    }

    /// True when the array has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Field `name` of element `i` of a struct array.
    pub fn field(&self, i: usize, name: &str) -> Option<&MatValue> {
        match self {
            MatValue::Struct { fields, elements, .. } => {
                let f = fields.iter().position(|n| n == name)?;
                elements.get(i)?.get(f)
            }
            _ => None,
        }
    }
}

/// The variables of a MAT v5 file, in file order: `(name, value)`.
///
/// Errors: a one-line reason (not a MAT v5 file, a v7.3/HDF5 file, a truncated or malformed
/// element, an unsupported array class).
pub fn read_mat(bytes: &[u8]) -> Result<Vec<(String, MatValue)>, String> {
    if bytes.len() < 128 {
        return Err(format!("{} bytes: too short for a MAT-file header (128 bytes)", bytes.len()));
    }
    if bytes.starts_with(b"MATLAB 7.3") {
        return Err("a MAT-file v7.3 (HDF5): save it with -v7 (the devkit's meta.mat is v5)".into());
    }
    let be = match &bytes[126..128] {
        b"IM" => false,
        b"MI" => true,
        _ => return Err("not a MAT-file v5 (no endian indicator at byte 126)".into()),
    };
    let mut cur = Cursor { b: bytes, pos: 128, be };
    let mut vars = Vec::new();
    while cur.b.len().saturating_sub(cur.pos) >= 8 {
        let (ty, data) = cur.element()?;
        match ty {
            MI_COMPRESSED => {
                let mut inflated = Vec::new();
                flate2::read::ZlibDecoder::new(data)
                    .take(MAX_INFLATED + 1)
                    .read_to_end(&mut inflated)
                    .map_err(|e| format!("compressed variable {}: {e}", vars.len() + 1))?;
                if inflated.len() as u64 > MAX_INFLATED {
                    return Err(format!("a compressed variable inflates past {} MiB", MAX_INFLATED >> 20));
                }
                let mut inner = Cursor { b: &inflated, pos: 0, be };
                let (ty, data) = inner.element()?;
                if ty == MI_MATRIX {
                    vars.push(matrix(data, be, 0)?);
                }
            }
            MI_MATRIX => vars.push(matrix(data, be, 0)?),
            _ => {} // not a variable
        }
    }
    Ok(vars)
}

/// Reads elements from bytes in the file's byte order.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    be: bool,
}

impl<'a> Cursor<'a> {
    fn u32_at(&self, at: usize) -> Result<u32, String> {
        let w: [u8; 4] = self
            .b
            .get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| format!("truncated element tag at byte {at}"))?;
        Ok(if self.be { u32::from_be_bytes(w) } else { u32::from_le_bytes(w) })
    }

    /// The next element: (data type, data), the small format (data inside the tag) included.
    /// Normal elements are padded to 8 bytes, compressed ones are not.
    fn element(&mut self) -> Result<(u32, &'a [u8]), String> {
        let first = self.u32_at(self.pos)?;
        if first >> 16 != 0 {
            let (ty, n) = (first & 0xFFFF, (first >> 16) as usize);
            if n > 4 {
                return Err(format!("small element of {n} bytes at byte {}", self.pos));
            }
            let data = self.b.get(self.pos + 4..self.pos + 4 + n).ok_or("truncated small element")?;
            self.pos = (self.pos + 8).min(self.b.len());
            return Ok((ty, data));
        }
        let n = self.u32_at(self.pos + 4)? as usize;
        let start = self.pos + 8;
        let data = self
            .b
            .get(start..start.saturating_add(n))
            .ok_or_else(|| format!("element of {n} bytes at byte {} runs past the end of the data", self.pos))?;
        let padded = if first == MI_COMPRESSED { n } else { n.div_ceil(8) * 8 };
        self.pos = (start + padded).min(self.b.len());
        Ok((first, data))
    }

    fn expect(&mut self, what: &str, types: &[u32]) -> Result<&'a [u8], String> {
        let (ty, data) = self.element()?;
        if !types.contains(&ty) {
            return Err(format!("{what}: element of type {ty}, expected one of {types:?}"));
        }
        Ok(data)
    }
}

/// Size in bytes of one value of a numeric data type.
fn width(ty: u32) -> Option<usize> {
    Some(match ty {
        MI_INT8 | MI_UINT8 | MI_UTF8 => 1,
        MI_INT16 | MI_UINT16 | MI_UTF16 => 2,
        MI_INT32 | MI_UINT32 | MI_SINGLE | MI_UTF32 => 4,
        MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
        _ => return None,
    })
}

/// The values of a numeric element as `f64`.
fn numbers(ty: u32, data: &[u8], be: bool) -> Result<Vec<f64>, String> {
    let w = width(ty)
        .filter(|_| !matches!(ty, MI_UTF8 | MI_UTF16 | MI_UTF32))
        .ok_or(format!("data type {ty} is not numeric"))?;
    if !data.len().is_multiple_of(w) {
        return Err(format!("{} bytes of data type {ty} ({w} bytes per value)", data.len()));
    }
    let word = |c: &[u8]| -> u64 {
        let mut v = 0u64;
        for i in 0..w {
            let byte = if be { c[i] } else { c[w - 1 - i] };
            v = (v << 8) | byte as u64;
        }
        v
    };
    Ok(data
        .chunks_exact(w)
        .map(|c| {
            let v = word(c);
            match ty {
                MI_INT8 => v as u8 as i8 as f64,
                MI_UINT8 => v as u8 as f64,
                MI_INT16 => v as u16 as i16 as f64,
                MI_UINT16 => v as u16 as f64,
                MI_INT32 => v as u32 as i32 as f64,
                MI_UINT32 => v as u32 as f64,
                MI_SINGLE => f32::from_bits(v as u32) as f64,
                MI_DOUBLE => f64::from_bits(v),
                MI_INT64 => v as i64 as f64,
                _ => v as f64, // MI_UINT64
            }
        })
        .collect())
}

/// The characters of a char array's data element.
fn chars(ty: u32, data: &[u8], be: bool) -> Result<Vec<char>, String> {
    match ty {
        MI_UINT8 | MI_INT8 | MI_UTF8 => Ok(String::from_utf8_lossy(data).chars().collect()),
        MI_UINT16 | MI_UTF16 => {
            let units: Vec<u16> = numbers(MI_UINT16, data, be)?.into_iter().map(|v| v as u16).collect();
            Ok(char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect())
        }
        MI_UTF32 | MI_UINT32 | MI_INT32 => Ok(numbers(MI_UINT32, data, be)?
            .into_iter()
            .map(|v| char::from_u32(v as u32).unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect()),
        _ => Err(format!("char data of type {ty}")),
    }
}

/// One array (the data of a miMATRIX element): its name and value.
fn matrix(data: &[u8], be: bool, depth: usize) -> Result<(String, MatValue), String> {
    if depth > MAX_DEPTH {
        return Err(format!("arrays nested more than {MAX_DEPTH} deep"));
    }
    if data.is_empty() {
        // an empty array inside a struct or cell: MATLAB writes a miMATRIX of 0 bytes
        return Ok((String::new(), MatValue::Numeric { dims: vec![0, 0], data: Vec::new() }));
    }
    let mut cur = Cursor { b: data, pos: 0, be };
    let flags = cur.expect("array flags", &[MI_UINT32])?;
    let class = numbers(MI_UINT32, flags.get(..4).ok_or("array flags shorter than 4 bytes")?, be)?[0] as u32 & 0xFF;
    let dims_raw = cur.expect("dimensions", &[MI_INT32])?;
    let dims: Vec<usize> = numbers(MI_INT32, dims_raw, be)?
        .into_iter()
        .map(|d| if d >= 0.0 { Ok(d as usize) } else { Err(format!("negative dimension {d}")) })
        .collect::<Result<_, _>>()?;
    let numel = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("dimensions overflow")?;
    let name = String::from_utf8_lossy(cur.expect("array name", &[MI_INT8, MI_UINT8])?).into_owned();
    let value = match class {
        MX_CELL | MX_STRUCT => {
            // every element (and field) takes at least an 8-byte tag: bound the count first
            let fields = if class == MX_STRUCT { field_names(&mut cur)? } else { Vec::new() };
            let per = if class == MX_STRUCT { fields.len() } else { 1 };
            if numel.saturating_mul(per).saturating_mul(8) > data.len() {
                return Err(format!("{name}: {numel} elements do not fit in {} bytes", data.len()));
            }
            let mut elements = Vec::with_capacity(numel);
            for _ in 0..numel {
                let mut one = Vec::with_capacity(per);
                for _ in 0..per {
                    let sub = cur.expect(&format!("element of {name}"), &[MI_MATRIX])?;
                    one.push(matrix(sub, be, depth + 1)?.1);
                }
                elements.push(one);
            }
            if class == MX_STRUCT {
                MatValue::Struct { dims, fields, elements }
            } else {
                MatValue::Cell { dims, elements: elements.into_iter().flatten().collect() }
            }
        }
        MX_CHAR => {
            let (ty, raw) = cur.element()?;
            let chars = chars(ty, raw, be)?;
            if chars.len() != numel {
                return Err(format!("{name}: {} characters for dimensions {dims:?}", chars.len()));
            }
            MatValue::Char { dims, chars }
        }
        6..=15 => {
            let (ty, raw) = cur.element()?;
            let values = numbers(ty, raw, be).map_err(|e| format!("{name}: {e}"))?;
            if values.len() != numel {
                return Err(format!("{name}: {} values for dimensions {dims:?}", values.len()));
            }
            MatValue::Numeric { dims, data: values }
        }
        other => {
            let what = match other {
                3 => "object",
                5 => "sparse",
                _ => "unknown",
            };
            return Err(format!("{name}: {what} arrays (class {other}) are not read"));
        }
    };
    Ok((name, value))
}

/// The field names of a struct array: a field-name length, then the names, each NUL-padded to it.
fn field_names(cur: &mut Cursor<'_>) -> Result<Vec<String>, String> {
    let len = numbers(MI_INT32, cur.expect("field name length", &[MI_INT32])?, cur.be)?;
    let len = len.first().copied().filter(|&l| l >= 1.0).ok_or("field name length below 1")? as usize;
    let raw = cur.expect("field names", &[MI_INT8, MI_UINT8])?;
    if !raw.len().is_multiple_of(len) {
        return Err(format!("{} bytes of field names of {len} bytes each", raw.len()));
    }
    Ok(raw
        .chunks(len)
        .map(|c| String::from_utf8_lossy(c.split(|&b| b == 0).next().unwrap_or(&[])).into_owned())
        .collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A MAT v5 writer for tests, written from the format's description: elements with 8-byte
    /// padding and the small format, struct and char arrays, optional zlib compression.
    pub(crate) struct Writer {
        pub be: bool,
    }

    impl Writer {
        fn u32(&self, v: u32) -> [u8; 4] {
            if self.be {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        }
        fn element(&self, ty: u32, data: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            if data.len() <= 4 && ty != MI_MATRIX {
                out.extend(self.u32(((data.len() as u32) << 16) | ty));
                out.extend(data);
                out.resize(8, 0);
                return out;
            }
            out.extend(self.u32(ty));
            out.extend(self.u32(data.len() as u32));
            out.extend(data);
            out.resize(8 + data.len().div_ceil(8) * 8, 0);
            out
        }
        fn head(&self, class: u32, dims: &[usize], name: &str) -> Vec<u8> {
            let mut out = self.element(MI_UINT32, &[self.u32(class), self.u32(0)].concat());
            let d: Vec<u8> = dims.iter().flat_map(|&x| self.u32(x as u32)).collect();
            out.extend(self.element(MI_INT32, &d));
            out.extend(self.element(MI_INT8, name.as_bytes()));
            out
        }
        /// A 1xN char array stored as UTF-16.
        pub fn text(&self, name: &str, s: &str) -> Vec<u8> {
            let mut body = self.head(MX_CHAR, &[1, s.len()], name);
            let units: Vec<u8> =
                s.encode_utf16().flat_map(|u| if self.be { u.to_be_bytes() } else { u.to_le_bytes() }).collect();
            body.extend(self.element(MI_UINT16, &units));
            self.element(MI_MATRIX, &body)
        }
        /// A double scalar stored, as MATLAB does, in the smallest unsigned type that holds it.
        pub fn scalar(&self, name: &str, v: u32) -> Vec<u8> {
            let mut body = self.head(6, &[1, 1], name);
            body.extend(if v < 256 {
                self.element(MI_UINT8, &[v as u8])
            } else {
                self.element(MI_UINT16, &if self.be { (v as u16).to_be_bytes() } else { (v as u16).to_le_bytes() })
            });
            self.element(MI_MATRIX, &body)
        }
        /// An empty 1x0 double array (MATLAB writes an element of 0 values).
        pub fn empty(&self, name: &str) -> Vec<u8> {
            let mut body = self.head(6, &[1, 0], name);
            body.extend(self.element(MI_DOUBLE, &[]));
            self.element(MI_MATRIX, &body)
        }
        /// An Nx1 struct array; `rows[i]` holds each field's miMATRIX element (unnamed).
        pub fn structs(&self, name: &str, fields: &[&str], rows: &[Vec<Vec<u8>>]) -> Vec<u8> {
            let mut body = self.head(MX_STRUCT, &[rows.len(), 1], name);
            body.extend(self.element(MI_INT32, &self.u32(32)));
            let names: Vec<u8> = fields
                .iter()
                .flat_map(|f| {
                    let mut b = f.as_bytes().to_vec();
                    b.resize(32, 0);
                    b
                })
                .collect();
            body.extend(self.element(MI_INT8, &names));
            for row in rows {
                for field in row {
                    body.extend(field);
                }
            }
            self.element(MI_MATRIX, &body)
        }
        /// A whole file holding `vars` (each a miMATRIX element), compressed or not.
        pub fn file(&self, vars: &[Vec<u8>], compress: bool) -> Vec<u8> {
            let mut out = b"MATLAB 5.0 MAT-file, written by a test".to_vec();
            out.resize(124, b' ');
            out.extend(if self.be { [0x01, 0x00] } else { [0x00, 0x01] });
            out.extend(if self.be { b"MI" } else { b"IM" });
            for v in vars {
                if compress {
                    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
                    z.write_all(v).unwrap();
                    let z = z.finish().unwrap();
                    out.extend(self.u32(MI_COMPRESSED));
                    out.extend(self.u32(z.len() as u32));
                    out.extend(z);
                } else {
                    out.extend(v);
                }
            }
            out
        }
    }

    /// The devkit's `synsets` layout: leaf synsets 1..=n (num_children 0) and one inner node.
    pub(crate) fn meta_mat(w: &Writer, wnids: &[&str], compress: bool) -> Vec<u8> {
        let fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height"];
        let mut rows: Vec<Vec<Vec<u8>>> = wnids
            .iter()
            .enumerate()
            .map(|(i, wnid)| {
                vec![
                    w.scalar("", i as u32 + 1),
                    w.text("", wnid),
                    w.text("", &format!("thing {i}")),
                    w.text("", "a thing"),
                    w.scalar("", 0),
                    w.empty(""),
                    w.scalar("", 0),
                ]
            })
            .collect();
        rows.push(vec![
            w.scalar("", 1001),
            w.text("", "n99999999"),
            w.text("", "entity"),
            w.text("", "everything"),
            w.scalar("", wnids.len() as u32),
            w.scalar("", 1),
            w.scalar("", 1),
        ]);
        w.file(&[w.structs("synsets", &fields, &rows)], compress)
    }

    #[test]
    fn reads_struct_arrays_in_both_byte_orders_compressed_or_not() {
        for be in [false, true] {
            for compress in [false, true] {
                let w = Writer { be };
                let bytes = meta_mat(&w, &["n01440764", "n01443537"], compress);
                let vars = read_mat(&bytes).unwrap();
                assert_eq!(vars.len(), 1);
                let (name, s) = &vars[0];
                assert_eq!(name, "synsets");
                assert_eq!(s.len(), 3);
                assert_eq!(s.field(0, "ILSVRC2012_ID").unwrap().as_scalar(), Some(1.0));
                assert_eq!(s.field(1, "WNID").unwrap().as_string().as_deref(), Some("n01443537"));
                assert_eq!(s.field(2, "ILSVRC2012_ID").unwrap().as_scalar(), Some(1001.0));
                assert_eq!(s.field(2, "num_children").unwrap().as_scalar(), Some(2.0));
                assert!(s.field(0, "children").unwrap().is_empty());
                assert_eq!(s.field(0, "missing"), None);
            }
        }
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let w = Writer { be: false };
        let good = meta_mat(&w, &["n01440764"], false);
        assert!(read_mat(&good[..100]).unwrap_err().contains("too short"));
        let mut hdf5 = good.clone();
        hdf5[..10].copy_from_slice(b"MATLAB 7.3");
        assert!(read_mat(&hdf5).unwrap_err().contains("v7.3"));
        let mut no_endian = good.clone();
        no_endian[126..128].copy_from_slice(b"XX");
        assert!(read_mat(&no_endian).unwrap_err().contains("not a MAT-file v5"));
        // every truncation, and every single-byte corruption of the first 400 bytes, returns
        for cut in 128..good.len() {
            let _ = read_mat(&good[..cut]);
        }
        for i in 128..400.min(good.len()) {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut bad = good.clone();
                bad[i] ^= flip;
                let _ = read_mat(&bad);
            }
        }
        let compressed = meta_mat(&w, &["n01440764"], true);
        assert!(read_mat(&compressed[..compressed.len() - 10]).is_err());
    }
}
