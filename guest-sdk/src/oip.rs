//! The Open Inference Protocol's infer call (KServe's v2 protocol, Triton's
//! HTTP/REST API): its request and response bodies, in JSON and with the
//! binary tensor data extension, decoded into wasi-nn tensors and encoded
//! back. The built-in handler of model-only deploys is [`decode`], one
//! [`crate::Model::run`] and [`encode`]; a handler of its own can speak the
//! protocol the same way.
//!
//! # Framing between the host and the handler
//!
//! The host serves `POST /v2/models/NAME/infer` and translates HTTP's
//! framing; the handler sees one of two content types:
//!
//! - [`JSON`]: the body is the request's JSON document.
//! - [`BINARY`] with a [`HEADER_LENGTH`] parameter
//!   (`application/vnd.nimbus.oip-binary; header-length=N`): the first `N`
//!   bytes are the JSON document, then come the raw bytes of each input whose
//!   `parameters` have `binary_data_size`, in input order. This is the
//!   protocol's binary extension with its `Inference-Header-Content-Length`
//!   header moved into the content type.
//!
//! The answer uses the same two forms: [`JSON`] when no output is binary,
//! else [`BINARY`] with the JSON document's length, the JSON, then the bytes
//! of each binary output in output order.
//!
//! # Tensors
//!
//! Binary data is each element little-endian, row-major; a `BOOL` is one
//! byte (0 or 1). JSON `data` is a flat or nested array (row-major) whose
//! element count must be the shape's product. wasi-nn carries seven element
//! types, so the protocol's datatypes map as `FP16`, `BF16`, `FP32`, `FP64`,
//! `UINT8`, `INT32`, `INT64` to their own and `BOOL` to `u8` (0 or 1); `INT8`,
//! `INT16`, `UINT16`, `UINT32`, `UINT64` and `BYTES` (strings) are refused
//! with a [`Error::BadInput`] naming the input. JSON numbers for `FP16` and
//! `BF16` inputs are rounded to the nearest value (ties to even).
//!
//! In answers, an output's wasi-nn type maps back the same way; a `u8`
//! output is `BOOL` when the host lists it in [`BOOL_TENSORS_VAR`]. JSON
//! data is flat, floats in their shortest form (`FP16` and `BF16` printed as
//! the `f32` they are exactly); a NaN or infinity, which JSON cannot write,
//! is `null` (ask for the output in binary to get it exactly).
//!
//! ```no_run
//! use nimbus_sdk::{Handler, Model, Request, Response, Result, oip};
//!
//! struct Served {
//!     model: Model,
//! }
//!
//! impl Handler for Served {
//!     fn init() -> Result<Self> {
//!         Ok(Served { model: Model::load("model")? })
//!     }
//!
//!     fn handle(&self, request: Request) -> Result<Response> {
//!         let infer = oip::decode(&request)?;
//!         let outputs = self.model.run(infer.tensors()?)?;
//!         oip::encode(&infer.request, &oip::Context::from_env(), outputs.into_raw())
//!     }
//! }
//!
//! nimbus_sdk::export_handler!(Served);
//! ```

use crate::body::{Request, Response};
use crate::error::{Error, Result};
use crate::tensor::{ElementType, RawTensor, Tensor};
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

/// A request or answer that is one JSON document: `application/json`.
pub const JSON: &str = crate::body::JSON;
/// A request or answer with binary tensors: the JSON document, then the
/// bytes. Its length travels in the [`HEADER_LENGTH`] parameter:
/// `application/vnd.nimbus.oip-binary; header-length=N`.
pub const BINARY: &str = "application/vnd.nimbus.oip-binary";
/// The [`BINARY`] content type's parameter that gives the JSON document's
/// length in bytes.
pub const HEADER_LENGTH: &str = "header-length";
/// The environment variable naming the function being served (the
/// answer's `model_name`; `model` when absent).
pub const FUNCTION_VAR: &str = "NIMBUS_FUNCTION";
/// The environment variable with the version being served (the answer's
/// `model_version`; `1` when absent).
pub const VERSION_VAR: &str = "NIMBUS_VERSION";
/// The environment variable listing the graph's `bool` inputs and outputs,
/// comma-separated: wasi-nn carries them as `u8`, the protocol calls them
/// `BOOL`.
pub const BOOL_TENSORS_VAR: &str = "NIMBUS_BOOL_TENSORS";

/// A request's or tensor's `parameters`: any JSON object.
pub type Parameters = Map<String, Value>;

/// The protocol's tensor datatypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Datatype {
    /// `BOOL`: carried as `u8` 0 or 1.
    Bool,
    /// `UINT8`.
    Uint8,
    /// `UINT16` (not carried).
    Uint16,
    /// `UINT32` (not carried).
    Uint32,
    /// `UINT64` (not carried).
    Uint64,
    /// `INT8` (not carried).
    Int8,
    /// `INT16` (not carried).
    Int16,
    /// `INT32`.
    Int32,
    /// `INT64`.
    Int64,
    /// `FP16`.
    Fp16,
    /// `BF16`.
    Bf16,
    /// `FP32`.
    Fp32,
    /// `FP64`.
    Fp64,
    /// `BYTES`: strings (not carried).
    Bytes,
}

const DATATYPES: [(Datatype, &str); 14] = [
    (Datatype::Bool, "BOOL"),
    (Datatype::Uint8, "UINT8"),
    (Datatype::Uint16, "UINT16"),
    (Datatype::Uint32, "UINT32"),
    (Datatype::Uint64, "UINT64"),
    (Datatype::Int8, "INT8"),
    (Datatype::Int16, "INT16"),
    (Datatype::Int32, "INT32"),
    (Datatype::Int64, "INT64"),
    (Datatype::Fp16, "FP16"),
    (Datatype::Bf16, "BF16"),
    (Datatype::Fp32, "FP32"),
    (Datatype::Fp64, "FP64"),
    (Datatype::Bytes, "BYTES"),
];

/// The datatypes wasi-nn carries, for messages.
const CARRIED: &str = "BOOL, UINT8, INT32, INT64, FP16, BF16, FP32 and FP64";

impl Datatype {
    /// Its name in the protocol (`FP32`).
    pub fn as_str(self) -> &'static str {
        DATATYPES.iter().find(|(d, _)| *d == self).map_or("", |(_, s)| s)
    }

    /// The wasi-nn element type that carries it, if any (`BOOL` is `u8`).
    pub fn element_type(self) -> Option<ElementType> {
        Some(match self {
            Datatype::Bool | Datatype::Uint8 => ElementType::U8,
            Datatype::Int32 => ElementType::I32,
            Datatype::Int64 => ElementType::I64,
            Datatype::Fp16 => ElementType::Fp16,
            Datatype::Bf16 => ElementType::Bf16,
            Datatype::Fp32 => ElementType::Fp32,
            Datatype::Fp64 => ElementType::Fp64,
            _ => return None,
        })
    }

    /// The datatype of a tensor wasi-nn carries as `ty`; `is_bool` makes a
    /// `u8` tensor `BOOL`.
    pub fn carried_by(ty: ElementType, is_bool: bool) -> Self {
        match ty {
            ElementType::U8 if is_bool => Datatype::Bool,
            ElementType::U8 => Datatype::Uint8,
            ElementType::I32 => Datatype::Int32,
            ElementType::I64 => Datatype::Int64,
            ElementType::Fp16 => Datatype::Fp16,
            ElementType::Bf16 => Datatype::Bf16,
            ElementType::Fp32 => Datatype::Fp32,
            ElementType::Fp64 => Datatype::Fp64,
        }
    }
}

impl fmt::Display for Datatype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Datatype {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        DATATYPES.iter().find(|(_, name)| *name == s).map(|(d, _)| *d).ok_or_else(|| {
            let names: Vec<&str> = DATATYPES.iter().map(|(_, n)| *n).collect();
            format!("unknown datatype `{s}`; the protocol's are {}", names.join(", "))
        })
    }
}

impl Serialize for Datatype {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Datatype {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(de::Error::custom)
    }
}

/// An infer request's JSON document. Fields the protocol or its clients add
/// (`model_name`, `sequence_id`, ...) are accepted and ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InferRequest {
    /// The caller's id for the request, echoed in the answer.
    #[serde(default)]
    pub id: Option<String>,
    /// Request parameters; `binary_data_output: true` asks for every output
    /// in binary.
    #[serde(default, deserialize_with = "nullable")]
    pub parameters: Parameters,
    /// The graph's inputs.
    pub inputs: Vec<RequestInput>,
    /// The outputs wanted and how; all, in JSON, when absent or empty.
    #[serde(default, deserialize_with = "nullable")]
    pub outputs: Vec<RequestOutput>,
}

/// One input of an [`InferRequest`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RequestInput {
    /// The graph input's name.
    pub name: String,
    /// Dimensions, outermost first.
    pub shape: Vec<i64>,
    /// The element type.
    pub datatype: Datatype,
    /// `binary_data_size`: the input's bytes follow the JSON document.
    #[serde(default, deserialize_with = "nullable")]
    pub parameters: Parameters,
    /// The values in JSON, when not in binary. [`decode`] takes them out.
    #[serde(default)]
    pub data: Option<Values>,
}

/// One wanted output of an [`InferRequest`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RequestOutput {
    /// The graph output's name.
    pub name: String,
    /// `binary_data: true` asks for it in binary.
    #[serde(default, deserialize_with = "nullable")]
    pub parameters: Parameters,
}

/// `null` as the type's default, like an absent field.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(deserializer: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// An input's JSON `data`, flattened (nested arrays read row-major).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Values(Vec<Scalar>);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Scalar {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    /// A string; only kept to say that strings are not carried.
    Text,
}

impl Values {
    /// How many values.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut values = Vec::new();
        Flatten(&mut values).deserialize(deserializer)?;
        Ok(Values(values))
    }
}

/// Appends a scalar, or every scalar of a (nested) array, to its vector.
struct Flatten<'a>(&'a mut Vec<Scalar>);

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of numbers or booleans (nested arrays allowed)")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.push(Scalar::Bool(v));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.push(Scalar::Int(v));
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.push(Scalar::Uint(v));
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.push(Scalar::Float(v));
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.0.push(Scalar::Text);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(hint) = seq.size_hint() {
            self.0.reserve(hint);
        }
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

/// A decoded infer request: its JSON document (inputs without their data)
/// and each input's tensor, in request order.
#[derive(Debug, Clone, PartialEq)]
pub struct Infer {
    /// The JSON document; every input's `data` is `None` (moved to
    /// [`Infer::inputs`]).
    pub request: InferRequest,
    /// The inputs as wasi-nn will carry them.
    pub inputs: Vec<Input>,
}

/// One decoded input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// The graph input's name.
    pub name: String,
    /// The datatype the request gave.
    pub datatype: Datatype,
    /// Its values as wasi-nn carries them (a `BOOL` as `u8` 0 or 1).
    pub tensor: RawTensor,
}

impl Infer {
    /// The inputs as named tensors for [`crate::Model::run`].
    pub fn tensors(&self) -> Result<Vec<(&str, Tensor)>> {
        self.inputs
            .iter()
            .map(|i| Ok((i.name.as_str(), Tensor::from_bytes(&i.tensor.shape, i.tensor.ty, &i.tensor.bytes)?)))
            .collect()
    }
}

/// Reads an infer request of content type [`JSON`] or [`BINARY`] (anything
/// else is [`Error::UnsupportedMediaType`]); every problem with its content
/// is an [`Error::BadInput`] naming the input and what was expected.
pub fn decode(request: &Request) -> Result<Infer> {
    let (header, mut binary) = match request.content_type.as_str() {
        "" | JSON => (request.body.as_slice(), None),
        BINARY => {
            let length = request.content_type_param(HEADER_LENGTH).ok_or_else(|| {
                Error::bad_input(format!("content type {BINARY} needs a {HEADER_LENGTH}=N parameter"))
            })?;
            let length = length.parse::<usize>().ok().filter(|&n| n <= request.body.len()).ok_or_else(|| {
                Error::bad_input(format!(
                    "{HEADER_LENGTH} is `{length}`: it must be the JSON header's length in bytes, at most the \
                         body's {}",
                    request.body.len()
                ))
            })?;
            let (header, binary) = request.body.split_at(length);
            (header, Some(binary))
        }
        other => {
            return Err(Error::UnsupportedMediaType(format!(
                "`{other}` is not an inference request: send {JSON}, or {BINARY}; {HEADER_LENGTH}=N (the JSON \
                 header's length) with the binary tensors after the header"
            )));
        }
    };
    let mut parsed: InferRequest =
        serde_json::from_slice(header).map_err(|e| Error::bad_input(format!("invalid inference request JSON: {e}")))?;
    let mut seen = HashSet::new();
    let mut inputs = Vec::with_capacity(parsed.inputs.len());
    for input in &mut parsed.inputs {
        if !seen.insert(input.name.clone()) {
            return Err(Error::bad_input(format!("input `{}` is given twice", input.name)));
        }
        inputs.push(decode_input(input, &mut binary)?);
    }
    if let Some(rest) = binary.filter(|b| !b.is_empty()) {
        return Err(Error::bad_input(format!(
            "{} bytes follow the binary data of every input that has binary_data_size; the binary part must hold \
             exactly those inputs' bytes",
            rest.len()
        )));
    }
    let mut seen = HashSet::new();
    for output in &parsed.outputs {
        if !seen.insert(output.name.as_str()) {
            return Err(Error::bad_input(format!("output `{}` is asked for twice", output.name)));
        }
        if output.parameters.contains_key("classification") {
            return Err(Error::bad_input(format!(
                "output `{}`: the classification extension is not supported; ask for the output itself",
                output.name
            )));
        }
        binary_flag(&output.parameters, "binary_data", &format!("output `{}`", output.name))?;
    }
    binary_flag(&parsed.parameters, "binary_data_output", "the request")?;
    Ok(Infer { request: parsed, inputs })
}

/// One input's tensor, from its JSON data or the next bytes of the binary
/// part (which it advances).
fn decode_input(input: &mut RequestInput, binary: &mut Option<&[u8]>) -> Result<Input> {
    let name = &input.name;
    let datatype = input.datatype;
    let ty = match datatype.element_type() {
        Some(ty) => ty,
        None if datatype == Datatype::Bytes => {
            return Err(Error::bad_input(format!(
                "input `{name}` is BYTES (strings): wasi-nn carries numeric tensors only, so the model cannot take \
                 strings here; send numbers ({CARRIED}), or write a handler (`nimbus new`) that turns the strings \
                 into tensors"
            )));
        }
        None => {
            return Err(Error::bad_input(format!(
                "input `{name}` is {datatype}, which wasi-nn cannot carry; send one of {CARRIED}"
            )));
        }
    };
    let mut shape = Vec::with_capacity(input.shape.len());
    for &d in &input.shape {
        let d = u32::try_from(d).map_err(|_| {
            Error::bad_input(format!(
                "input `{name}`: shape {:?} has dimension {d}; give every dimension's actual size (0 to {})",
                input.shape,
                u32::MAX
            ))
        })?;
        shape.push(d);
    }
    let count = shape.iter().try_fold(1u64, |n, &d| n.checked_mul(u64::from(d)));
    let bytes_needed = count.and_then(|n| n.checked_mul(ty.size() as u64));
    let (Some(count), Some(bytes_needed)) = (count, bytes_needed) else {
        return Err(Error::bad_input(format!("input `{name}`: shape {:?} is too large", input.shape)));
    };
    let binary_size = match input.parameters.get("binary_data_size") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            Error::bad_input(format!("input `{name}`: binary_data_size is {v}; it must be a byte count"))
        })?),
    };
    let bytes = match (binary_size, input.data.take()) {
        (Some(_), Some(_)) => {
            return Err(Error::bad_input(format!(
                "input `{name}` has both data and binary_data_size; send its values one way"
            )));
        }
        (None, None) => {
            return Err(Error::bad_input(format!(
                "input `{name}` has no data: give `data`, or binary_data_size and its bytes after the JSON header"
            )));
        }
        (Some(size), None) => {
            let Some(rest) = binary.as_mut() else {
                return Err(Error::bad_input(format!(
                    "input `{name}` has binary_data_size, but the request has no binary part: send the JSON header's \
                     length in the Inference-Header-Content-Length header and the bytes after it"
                )));
            };
            if size != bytes_needed {
                return Err(Error::bad_input(format!(
                    "input `{name}`: shape {shape:?} of {datatype} needs {bytes_needed} bytes, but binary_data_size \
                     is {size}"
                )));
            }
            if size > rest.len() as u64 {
                return Err(Error::bad_input(format!(
                    "input `{name}`: binary_data_size is {size}, but only {} bytes of binary data are left",
                    rest.len()
                )));
            }
            let (mine, others) = rest.split_at(size as usize);
            *rest = others;
            let mut bytes = mine.to_vec();
            if datatype == Datatype::Bool {
                bytes.iter_mut().for_each(|b| *b = u8::from(*b != 0));
            }
            bytes
        }
        (None, Some(values)) => {
            if values.len() as u64 != count {
                return Err(Error::bad_input(format!(
                    "input `{name}`: shape {shape:?} has {count} elements, but data has {} values",
                    values.len()
                )));
            }
            encode_values(name, datatype, &values.0)?
        }
    };
    Ok(Input { name: name.clone(), datatype, tensor: RawTensor { ty, shape, bytes } })
}

/// JSON values as the little-endian bytes of `datatype`'s carrier.
fn encode_values(name: &str, datatype: Datatype, values: &[Scalar]) -> Result<Vec<u8>> {
    let size = datatype.element_type().map_or(1, ElementType::size);
    let mut out = Vec::with_capacity(values.len() * size);
    for (i, &v) in values.iter().enumerate() {
        let wrong = |what: &str| Error::bad_input(format!("input `{name}`, value {i}: {} {what}", describe(v)));
        match datatype {
            Datatype::Bool => out.push(match v {
                Scalar::Bool(b) => u8::from(b),
                Scalar::Int(0) | Scalar::Uint(0) => 0,
                Scalar::Int(1) | Scalar::Uint(1) => 1,
                _ => return Err(wrong("is not a BOOL (true or false)")),
            }),
            Datatype::Uint8 => out.push(integer(v, u8::MIN.into(), u8::MAX.into(), &wrong, "UINT8")? as u8),
            Datatype::Int32 => {
                let x = integer(v, i32::MIN.into(), i32::MAX.into(), &wrong, "INT32")? as i32;
                out.extend_from_slice(&x.to_le_bytes());
            }
            Datatype::Int64 => {
                let x = integer(v, i64::MIN.into(), i64::MAX.into(), &wrong, "INT64")? as i64;
                out.extend_from_slice(&x.to_le_bytes());
            }
            Datatype::Fp16 => out.extend_from_slice(&f32_to_f16(float(v, &wrong, "FP16")? as f32).to_le_bytes()),
            Datatype::Bf16 => out.extend_from_slice(&f32_to_bf16(float(v, &wrong, "BF16")? as f32).to_le_bytes()),
            Datatype::Fp32 => out.extend_from_slice(&(float(v, &wrong, "FP32")? as f32).to_le_bytes()),
            Datatype::Fp64 => out.extend_from_slice(&float(v, &wrong, "FP64")?.to_le_bytes()),
            // Refused before any value is read.
            _ => return Err(Error::bad_input(format!("input `{name}`: {datatype} is not carried"))),
        }
    }
    Ok(out)
}

fn describe(v: Scalar) -> String {
    match v {
        Scalar::Bool(b) => format!("`{b}`"),
        Scalar::Int(x) => format!("`{x}`"),
        Scalar::Uint(x) => format!("`{x}`"),
        Scalar::Float(x) => format!("`{x}`"),
        Scalar::Text => "a string".to_owned(),
    }
}

/// A whole number in `min..=max` (an integral float counts).
fn integer(v: Scalar, min: i128, max: i128, wrong: &dyn Fn(&str) -> Error, datatype: &str) -> Result<i128> {
    let x = match v {
        Scalar::Int(x) => i128::from(x),
        Scalar::Uint(x) => i128::from(x),
        Scalar::Float(x) if x.fract() == 0.0 && x.abs() < 1e38 => x as i128,
        _ => return Err(wrong(&format!("is not an integer, as {datatype} needs"))),
    };
    if x < min || x > max {
        return Err(wrong(&format!("is out of {datatype}'s range {min}..={max}")));
    }
    Ok(x)
}

fn float(v: Scalar, wrong: &dyn Fn(&str) -> Error, datatype: &str) -> Result<f64> {
    match v {
        Scalar::Int(x) => Ok(x as f64),
        Scalar::Uint(x) => Ok(x as f64),
        Scalar::Float(x) => Ok(x),
        _ => Err(wrong(&format!("is not a number, as {datatype} needs"))),
    }
}

/// Whether `parameters[key]` asks for binary data (`true`), says no
/// (`false`) or is silent (`None`).
fn binary_flag(parameters: &Parameters, key: &str, whose: &str) -> Result<Option<bool>> {
    match parameters.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(Error::bad_input(format!("{whose}: {key} is {v}; it must be true or false"))),
    }
}

/// What the host tells the handler about the version it serves, from the
/// environment of the request (read it in `handle`, not in `init`: the
/// host sets these per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The answer's `model_name`: [`FUNCTION_VAR`], else `model`.
    pub model_name: String,
    /// The answer's `model_version`: [`VERSION_VAR`], else `1`.
    pub model_version: String,
    /// Inputs and outputs that are `bool` in the graph ([`BOOL_TENSORS_VAR`]).
    pub bool_tensors: HashSet<String>,
}

impl Default for Context {
    fn default() -> Self {
        Context { model_name: "model".to_owned(), model_version: "1".to_owned(), bool_tensors: HashSet::new() }
    }
}

impl Context {
    /// Reads [`FUNCTION_VAR`], [`VERSION_VAR`] and [`BOOL_TENSORS_VAR`].
    pub fn from_env() -> Self {
        let var = |key| std::env::var(key).ok().filter(|v| !v.is_empty());
        let defaults = Context::default();
        Context {
            model_name: var(FUNCTION_VAR).unwrap_or(defaults.model_name),
            model_version: var(VERSION_VAR).unwrap_or(defaults.model_version),
            bool_tensors: var(BOOL_TENSORS_VAR)
                .map(|v| v.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect())
                .unwrap_or_default(),
        }
    }
}

#[derive(Serialize)]
struct ResponseHeader<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<ResponseOutput<'a>>,
}

#[derive(Serialize)]
struct ResponseOutput<'a> {
    name: &'a str,
    datatype: Datatype,
    shape: &'a [u32],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Data<'a>>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

/// A tensor's bytes written as a flat JSON array of its values.
struct Data<'a> {
    datatype: Datatype,
    bytes: &'a [u8],
}

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        fn each<S: Serializer, const N: usize, T: Serialize>(
            serializer: S,
            bytes: &[u8],
            read: impl Fn([u8; N]) -> T,
        ) -> Result<S::Ok, S::Error> {
            let mut seq = serializer.serialize_seq(Some(bytes.len() / N))?;
            for chunk in bytes.chunks_exact(N) {
                seq.serialize_element(&read(chunk.try_into().expect("chunk of N bytes")))?;
            }
            seq.end()
        }
        let bytes = self.bytes;
        match self.datatype {
            Datatype::Bool => each(serializer, bytes, |[b]: [u8; 1]| b != 0),
            Datatype::Uint8 => each(serializer, bytes, |[b]: [u8; 1]| b),
            Datatype::Int32 => each(serializer, bytes, i32::from_le_bytes),
            Datatype::Int64 => each(serializer, bytes, i64::from_le_bytes),
            Datatype::Fp16 => each(serializer, bytes, |b| f16_to_f32(u16::from_le_bytes(b))),
            Datatype::Bf16 => each(serializer, bytes, |b| bf16_to_f32(u16::from_le_bytes(b))),
            Datatype::Fp32 => each(serializer, bytes, f32::from_le_bytes),
            Datatype::Fp64 => each(serializer, bytes, f64::from_le_bytes),
            other => Err(serde::ser::Error::custom(format!("{other} output cannot be written"))),
        }
    }
}

/// The answer to `request` from the graph's `outputs` (as
/// [`crate::Outputs::into_raw`] gives them): the outputs it asked for, in
/// its order (every output, in the graph's order, if it named none), each in
/// JSON or binary as asked. Asking for an output the graph does not have is
/// an [`Error::BadInput`] that lists the ones it has.
pub fn encode(request: &InferRequest, context: &Context, outputs: Vec<(String, RawTensor)>) -> Result<Response> {
    let all_binary = binary_flag(&request.parameters, "binary_data_output", "the request")?.unwrap_or(false);
    let chosen: Vec<(&str, &RawTensor, bool)> = if request.outputs.is_empty() {
        outputs.iter().map(|(n, t)| (n.as_str(), t, all_binary)).collect()
    } else {
        let mut chosen = Vec::with_capacity(request.outputs.len());
        for wanted in &request.outputs {
            let Some((name, tensor)) = outputs.iter().find(|(n, _)| *n == wanted.name) else {
                let names: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
                return Err(Error::bad_input(format!(
                    "the model has no output `{}`; its outputs are: {}",
                    wanted.name,
                    names.join(", ")
                )));
            };
            let whose = format!("output `{name}`");
            let binary = binary_flag(&wanted.parameters, "binary_data", &whose)?.unwrap_or(all_binary);
            chosen.push((name.as_str(), tensor, binary));
        }
        chosen
    };
    let header = ResponseHeader {
        model_name: &context.model_name,
        model_version: &context.model_version,
        id: request.id.as_deref(),
        outputs: chosen
            .iter()
            .map(|&(name, tensor, binary)| {
                let datatype = Datatype::carried_by(tensor.ty, context.bool_tensors.contains(name));
                ResponseOutput {
                    name,
                    datatype,
                    shape: &tensor.shape,
                    parameters: binary.then_some(BinarySize { binary_data_size: tensor.bytes.len() }),
                    data: (!binary).then_some(Data { datatype, bytes: &tensor.bytes }),
                }
            })
            .collect(),
    };
    let mut body = serde_json::to_vec(&header).map_err(Error::failed)?;
    let header_length = body.len();
    let binary: Vec<&[u8]> = chosen.iter().filter(|c| c.2).map(|c| c.1.bytes.as_slice()).collect();
    if binary.is_empty() {
        return Ok(Response::bytes(JSON, body));
    }
    body.reserve(binary.iter().map(|b| b.len()).sum());
    binary.iter().for_each(|b| body.extend_from_slice(b));
    Ok(Response::bytes(&format!("{BINARY}; {HEADER_LENGTH}={header_length}"), body))
}

/// `x` as IEEE 754 half precision, rounded to nearest, ties to even
/// (overflow is infinity, NaN stays NaN). By hand rather than through the
/// `half` crate: these dozen lines are all the SDK needs of it, and the
/// tests below check them exhaustively.
fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exponent = ((bits >> 23) & 0xff) as i32;
    let mantissa = bits & 0x7f_ffff;
    if exponent == 0xff {
        let nan = if mantissa != 0 { 0x200 | (mantissa >> 13) as u16 } else { 0 };
        return sign | 0x7c00 | nan;
    }
    // The exponent rebiased for half precision (bias 15 instead of 127).
    let e = exponent - 112;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    // A normal half keeps the top 10 mantissa bits under its exponent; a
    // subnormal one (e <= 0) the top bits of the mantissa with its implicit
    // 1, shifted further, under exponent 0.
    let (full, shift, exponent_bits) = if e > 0 {
        (mantissa, 13, (e as u32) << 10)
    } else if e < -10 {
        // At most half the smallest subnormal: zero.
        return sign;
    } else {
        (mantissa | 0x80_0000, (14 - e) as u32, 0)
    };
    let kept = exponent_bits | (full >> shift);
    let rest = full & ((1 << shift) - 1);
    let half = 1 << (shift - 1);
    let round_up = rest > half || (rest == half && kept & 1 == 1);
    // A carry out of the mantissa moves to the next exponent (or infinity),
    // which is the right answer.
    sign | (kept + u32::from(round_up)) as u16
}

/// A half-precision value as the `f32` it is exactly.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exponent = u32::from((h >> 10) & 0x1f);
    let mantissa = u32::from(h & 0x3ff);
    let bits = match exponent {
        0 if mantissa == 0 => sign,
        0 => {
            // Subnormal: mantissa x 2^-24, exact in f32.
            let value = mantissa as f32 * f32::from_bits(0x3380_0000);
            sign | value.to_bits()
        }
        0x1f => sign | 0x7f80_0000 | (mantissa << 13),
        _ => sign | ((exponent + 112) << 23) | (mantissa << 13),
    };
    f32::from_bits(bits)
}

/// `x` as bfloat16 (the top half of an `f32`), rounded to nearest, ties to
/// even; NaN stays NaN.
fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return (bits >> 16) as u16 | 0x40;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    ((bits + round) >> 16) as u16
}

/// A bfloat16 value as the `f32` it is exactly.
fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_request(body: &str) -> Request {
        Request {
            content_type: JSON.into(),
            content_type_params: Vec::new(),
            accept: String::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn binary_request(header: &str, binary: &[u8]) -> Request {
        let mut body = header.as_bytes().to_vec();
        body.extend_from_slice(binary);
        Request {
            content_type: BINARY.into(),
            content_type_params: vec![(HEADER_LENGTH.into(), header.len().to_string())],
            accept: String::new(),
            body,
        }
    }

    fn bad(result: Result<impl fmt::Debug>) -> String {
        match result {
            Err(Error::BadInput(m)) => m,
            other => panic!("expected bad input, got {other:?}"),
        }
    }

    fn f32s(bytes: &[u8]) -> Vec<f32> {
        bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    }

    #[test]
    fn json_inputs_are_flattened_and_typed() {
        let infer = decode(&json_request(
            r#"{"id": "42", "model_name": "x", "sequence_id": 7, "parameters": {"foo": 1},
                "inputs": [
                  {"name": "a", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2.5], [-3, 4e0]], "extra": null},
                  {"name": "b", "shape": [3], "datatype": "BOOL", "data": [true, false, 1]},
                  {"name": "c", "shape": [2], "datatype": "INT64", "data": [-9223372036854775808, 3.0]},
                  {"name": "d", "shape": [1], "datatype": "UINT8", "data": 255},
                  {"name": "e", "shape": [2], "datatype": "FP16", "data": [1, 0.1], "parameters": null},
                  {"name": "f", "shape": [], "datatype": "BF16", "data": [1.0]},
                  {"name": "g", "shape": [0, 4], "datatype": "INT32", "data": []},
                  {"name": "h", "shape": [1], "datatype": "FP64", "data": [0.1]}
                ],
                "outputs": null}"#,
        ))
        .unwrap();
        assert_eq!(infer.request.id.as_deref(), Some("42"));
        assert!(infer.request.outputs.is_empty());
        assert!(infer.request.inputs.iter().all(|i| i.data.is_none()));
        let [a, b, c, d, e, f, g, h] = infer.inputs.as_slice() else { panic!("8 inputs") };
        assert_eq!((a.tensor.ty, a.tensor.shape.as_slice()), (ElementType::Fp32, [2, 2].as_slice()));
        assert_eq!(f32s(&a.tensor.bytes), [1.0, 2.5, -3.0, 4.0]);
        assert_eq!(
            (b.datatype, b.tensor.ty, b.tensor.bytes.as_slice()),
            (Datatype::Bool, ElementType::U8, [1, 0, 1].as_slice())
        );
        assert_eq!(c.tensor.bytes, [i64::MIN.to_le_bytes(), 3i64.to_le_bytes()].concat());
        assert_eq!(d.tensor.bytes, [255]);
        assert_eq!(e.tensor.bytes, [0x00, 0x3c, 0x66, 0x2e]);
        assert_eq!((f.tensor.shape.as_slice(), f.tensor.bytes.as_slice()), ([].as_slice(), [0x80, 0x3f].as_slice()));
        assert_eq!((g.tensor.shape.as_slice(), g.tensor.bytes.len()), ([0, 4].as_slice(), 0));
        assert_eq!(h.tensor.bytes, 0.1f64.to_le_bytes());
    }

    #[test]
    fn binary_inputs_are_read_in_order_after_the_header() {
        let header = r#"{"inputs": [
            {"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
            {"name": "y", "shape": [1], "datatype": "INT32", "data": [5]},
            {"name": "z", "shape": [2], "datatype": "BOOL", "parameters": {"binary_data_size": 2}}
        ]}"#;
        let mut binary = [1.5f32.to_le_bytes(), (-2f32).to_le_bytes()].concat();
        binary.extend_from_slice(&[0, 7]);
        let infer = decode(&binary_request(header, &binary)).unwrap();
        assert_eq!(f32s(&infer.inputs[0].tensor.bytes), [1.5, -2.0]);
        assert_eq!(infer.inputs[1].tensor.bytes, 5i32.to_le_bytes());
        assert_eq!(infer.inputs[2].tensor.bytes, [0, 1]);

        let short = bad(decode(&binary_request(header, &binary[..9])));
        assert_eq!(short, "input `z`: binary_data_size is 2, but only 1 bytes of binary data are left");
        let mut long = binary.clone();
        long.push(0);
        assert!(bad(decode(&binary_request(header, &long))).starts_with("1 bytes follow the binary data"));
        let wrong = header.replace("\"binary_data_size\": 8", "\"binary_data_size\": 12");
        assert_eq!(
            bad(decode(&binary_request(&wrong, &binary))),
            "input `x`: shape [1, 2] of FP32 needs 8 bytes, but binary_data_size is 12"
        );
        assert!(bad(decode(&json_request(header))).contains("the request has no binary part"));
    }

    #[test]
    fn content_types_and_header_lengths_are_checked() {
        let mut r = json_request("{}");
        r.content_type = "text/csv".into();
        assert!(matches!(decode(&r), Err(Error::UnsupportedMediaType(m)) if m.contains(BINARY)));
        let mut r = binary_request("{}", &[]);
        r.content_type_params.clear();
        assert_eq!(bad(decode(&r)), format!("content type {BINARY} needs a header-length=N parameter"));
        r.content_type_params.push((HEADER_LENGTH.into(), "3".into()));
        assert!(bad(decode(&r)).starts_with("header-length is `3`"));
        // Through the SDK's own parsing of the header.
        let raw = crate::bindings::nimbus::function::types::Request {
            content_type: format!("{BINARY}; {HEADER_LENGTH}=13"),
            accept: "*/*".into(),
            body: br#"{"inputs":[]}"#.to_vec(),
        };
        assert!(decode(&Request::from(raw)).unwrap().inputs.is_empty());
    }

    #[test]
    fn bad_inputs_say_which_and_why() {
        let one = |input: &str| bad(decode(&json_request(&format!(r#"{{"inputs": [{input}]}}"#))));
        assert_eq!(
            one(r#"{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [1, 2]}"#),
            "input `x`: shape [1, 64] has 64 elements, but data has 2 values"
        );
        assert!(
            one(r#"{"name": "s", "shape": [1], "datatype": "BYTES", "data": ["hi"]}"#)
                .starts_with("input `s` is BYTES (strings): wasi-nn carries numeric tensors only")
        );
        assert_eq!(
            one(r#"{"name": "i", "shape": [1], "datatype": "INT8", "data": [1]}"#),
            "input `i` is INT8, which wasi-nn cannot carry; send one of BOOL, UINT8, INT32, INT64, FP16, BF16, FP32 and FP64"
        );
        assert!(
            one(r#"{"name": "i", "shape": [1], "datatype": "FLOAT", "data": [1]}"#)
                .contains("unknown datatype `FLOAT`; the protocol's are BOOL")
        );
        assert_eq!(
            one(r#"{"name": "u", "shape": [2], "datatype": "UINT8", "data": [1, 256]}"#),
            "input `u`, value 1: `256` is out of UINT8's range 0..=255"
        );
        assert_eq!(
            one(r#"{"name": "n", "shape": [1], "datatype": "INT32", "data": [1.5]}"#),
            "input `n`, value 0: `1.5` is not an integer, as INT32 needs"
        );
        assert_eq!(
            one(r#"{"name": "f", "shape": [1], "datatype": "FP32", "data": ["1"]}"#),
            "input `f`, value 0: a string is not a number, as FP32 needs"
        );
        assert_eq!(
            one(r#"{"name": "b", "shape": [1], "datatype": "BOOL", "data": [2]}"#),
            "input `b`, value 0: `2` is not a BOOL (true or false)"
        );
        assert!(
            one(r#"{"name": "d", "shape": [-1, 2], "datatype": "FP32", "data": [1, 2]}"#)
                .starts_with("input `d`: shape [-1, 2] has dimension -1")
        );
        assert!(one(r#"{"name": "e", "shape": [1], "datatype": "FP32"}"#).starts_with("input `e` has no data"));
        assert!(
            one(r#"{"name": "o", "shape": [4294967295, 4294967295, 4294967295], "datatype": "FP32", "data": []}"#)
                .ends_with("is too large")
        );
        assert!(
            one(r#"{"name": "x", "shape": [1], "datatype": "FP32", "data": [null]}"#)
                .starts_with("invalid inference request JSON: invalid type: null, expected an array of numbers")
        );
        let two = r#"{"inputs": [{"name": "x", "shape": [], "datatype": "FP32", "data": [1]},
                                 {"name": "x", "shape": [], "datatype": "FP32", "data": [1]}]}"#;
        assert_eq!(bad(decode(&json_request(two))), "input `x` is given twice");
        assert!(bad(decode(&json_request("{\"inputs\": [}"))).starts_with("invalid inference request JSON"));
        assert!(bad(decode(&json_request("{}"))).contains("missing field `inputs`"));
        let flag = r#"{"inputs": [], "parameters": {"binary_data_output": "yes"}}"#;
        assert_eq!(
            bad(decode(&json_request(flag))),
            r#"the request: binary_data_output is "yes"; it must be true or false"#
        );
        let class = r#"{"inputs": [], "outputs": [{"name": "y", "parameters": {"classification": 3}}]}"#;
        assert!(bad(decode(&json_request(class))).contains("classification extension is not supported"));
    }

    fn outputs() -> Vec<(String, RawTensor)> {
        let probabilities = [0.25f32, 0.75, 0.1, 0.9].iter().flat_map(|x| x.to_le_bytes()).collect();
        vec![
            (
                "label".into(),
                RawTensor { ty: ElementType::I64, shape: vec![2], bytes: [1i64, 1].map(i64::to_le_bytes).concat() },
            ),
            ("probabilities".into(), RawTensor { ty: ElementType::Fp32, shape: vec![2, 2], bytes: probabilities }),
            ("mask".into(), RawTensor { ty: ElementType::U8, shape: vec![2], bytes: vec![1, 0] }),
            ("half".into(), RawTensor { ty: ElementType::Fp16, shape: vec![1], bytes: vec![0x66, 0x2e] }),
        ]
    }

    fn context() -> Context {
        Context { model_name: "digits".into(), model_version: "3".into(), bool_tensors: ["mask".to_owned()].into() }
    }

    fn header(body: &str) -> InferRequest {
        decode(&json_request(body)).unwrap().request
    }

    #[test]
    fn answers_list_every_output_in_json_by_default() {
        let r = encode(&header(r#"{"id": "a1", "inputs": []}"#), &context(), outputs()).unwrap();
        assert_eq!(r.content_type, JSON);
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            r#"{"model_name":"digits","model_version":"3","id":"a1","outputs":[{"name":"label","datatype":"INT64","shape":[2],"data":[1,1]},{"name":"probabilities","datatype":"FP32","shape":[2,2],"data":[0.25,0.75,0.1,0.9]},{"name":"mask","datatype":"BOOL","shape":[2],"data":[true,false]},{"name":"half","datatype":"FP16","shape":[1],"data":[0.099975586]}]}"#
        );
        let r = encode(&header(r#"{"inputs": []}"#), &Context::default(), outputs()).unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            (v["model_name"].as_str(), v["model_version"].as_str(), v.get("id")),
            (Some("model"), Some("1"), None)
        );
        assert_eq!(v["outputs"][2]["datatype"], "UINT8");
    }

    #[test]
    fn answers_put_binary_outputs_after_the_json() {
        let request = header(
            r#"{"inputs": [], "outputs": [{"name": "mask", "parameters": {"binary_data": true}}, {"name": "label"}]}"#,
        );
        let r = encode(&request, &context(), outputs()).unwrap();
        let json = r#"{"model_name":"digits","model_version":"3","outputs":[{"name":"mask","datatype":"BOOL","shape":[2],"parameters":{"binary_data_size":2}},{"name":"label","datatype":"INT64","shape":[2],"data":[1,1]}]}"#;
        assert_eq!(r.content_type, format!("{BINARY}; {HEADER_LENGTH}={}", json.len()));
        assert_eq!(&r.body[..json.len()], json.as_bytes());
        assert_eq!(&r.body[json.len()..], [1, 0]);

        let request = header(
            r#"{"inputs": [], "parameters": {"binary_data_output": true},
                "outputs": [{"name": "probabilities"}, {"name": "label", "parameters": {"binary_data": false}}]}"#,
        );
        let r = encode(&request, &context(), outputs()).unwrap();
        let length: usize = r.content_type.rsplit('=').next().unwrap().parse().unwrap();
        let v: Value = serde_json::from_slice(&r.body[..length]).unwrap();
        assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 16);
        assert_eq!(v["outputs"][1]["data"], serde_json::json!([1, 1]));
        assert_eq!(f32s(&r.body[length..]), [0.25, 0.75, 0.1, 0.9]);
    }

    #[test]
    fn asking_for_a_missing_output_lists_the_real_ones() {
        let request = header(r#"{"inputs": [], "outputs": [{"name": "labels"}]}"#);
        assert_eq!(
            bad(encode(&request, &context(), outputs())),
            "the model has no output `labels`; its outputs are: label, probabilities, mask, half"
        );
    }

    #[test]
    fn half_precision_round_trips_every_value() {
        for h in 0..=u16::MAX {
            let x = f16_to_f32(h);
            if x.is_nan() {
                assert!(f16_to_f32(f32_to_f16(x)).is_nan(), "{h:#06x}");
            } else {
                assert_eq!(f32_to_f16(x), h, "{h:#06x} -> {x}");
            }
        }
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
    }

    #[test]
    fn half_precision_rounds_to_nearest_even() {
        // Every midpoint between neighbouring positive halves goes to the even
        // one; a hair above or below goes to the nearer one.
        for h in 0..0x7bffu16 {
            let (low, high) = (f16_to_f32(h), f16_to_f32(h + 1));
            let mid = ((f64::from(low) + f64::from(high)) / 2.0) as f32;
            let even = if h % 2 == 0 { h } else { h + 1 };
            assert_eq!(f32_to_f16(mid), even, "midpoint of {h:#06x}");
            assert_eq!(f32_to_f16(f32::from_bits(mid.to_bits() - 1)), h, "below midpoint of {h:#06x}");
            assert_eq!(f32_to_f16(f32::from_bits(mid.to_bits() + 1)), h + 1, "above midpoint of {h:#06x}");
            assert_eq!(f32_to_f16(-mid), 0x8000 | even);
        }
        assert_eq!(f32_to_f16(65519.0), 0x7bff);
        assert_eq!(f32_to_f16(65520.0), 0x7c00);
        assert_eq!(f32_to_f16(1e10), 0x7c00);
        assert_eq!(f32_to_f16(-f32::INFINITY), 0xfc00);
        assert_eq!(f32_to_f16(2f32.powi(-25)), 0);
        assert_eq!(f32_to_f16(1e-30), 0);
        assert_eq!(f32_to_f16(-0.0), 0x8000);
        assert_eq!(f32_to_f16(0.1), 0x2e66);
        assert_eq!(f32_to_f16(f32::NAN) & 0x7e00, 0x7e00);
    }

    #[test]
    fn bfloat16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: even is 1.
        assert_eq!(f32_to_bf16(1.0 + 2f32.powi(-8)), 0x3f80);
        assert_eq!(f32_to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        assert_eq!(f32_to_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 0x3f81);
        assert_eq!(f32_to_bf16(f32::MAX), 0x7f80);
        assert_eq!(f32_to_bf16(-f32::INFINITY), 0xff80);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
        for h in (0..=u16::MAX).filter(|h| h & 0x7f80 != 0x7f80) {
            assert_eq!(f32_to_bf16(bf16_to_f32(h)), h);
        }
    }

    #[test]
    fn datatypes_parse_print_and_map() {
        for (d, name) in DATATYPES {
            assert_eq!((name.parse::<Datatype>(), d.to_string()), (Ok(d), name.to_owned()));
            if let Some(ty) = d.element_type() {
                assert_eq!(Datatype::carried_by(ty, d == Datatype::Bool), d);
            }
        }
        assert_eq!(DATATYPES.iter().filter(|(d, _)| d.element_type().is_some()).count(), 8);
    }
}
