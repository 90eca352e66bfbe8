//! A graph's signature as its callers see it: names, element types and
//! shapes of inputs and outputs, read from the file at deploy so that a model
//! wasi-nn cannot serve is refused then, never at its first request, and so
//! that the Open Inference Protocol's metadata needs no loaded session.
//!
//! wasi-nn carries dense tensors of seven element types. Three things users
//! export do not fit, and each gets a rule here: `bool` travels as `u8` (the
//! port says BOOL so clients see the model's type); skl2onnx's and
//! onnxmltools' ZipMap output, a sequence of maps from class to probability,
//! becomes the `[batch, classes]` tensor it was made from (classes in key
//! order, as ONNX Runtime's maps iterate, listed on the port); strings and
//! every other type are refused with the exporter option that avoids them.

use super::{AttributeProto, CheckError, GraphProto, NodeProto, TypeProto, show};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The inputs and outputs of a graph.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Signature {
    /// Inputs a caller gives (initializers listed as inputs left out).
    pub inputs: Vec<Port>,
    /// Outputs, in the graph's order.
    pub outputs: Vec<Port>,
}

/// One input or output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Port {
    /// Its name in the graph.
    pub name: String,
    /// The Open Inference Protocol's name of its element type (`FP32`,
    /// `INT64`, `BOOL`, ...).
    pub datatype: String,
    /// Dimensions, -1 where dynamic.
    pub shape: Vec<i64>,
    /// For a ZipMap output: the class of each column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Classes>,
}

impl Signature {
    /// Why the graph's first dimension is not a batch dimension, if it is
    /// not: every input and output must have one, and it must be dynamic
    /// (a graph fixed at one row cannot take more).
    pub fn batch_refusal(&self) -> Option<String> {
        let sides = [("input", &self.inputs), ("output", &self.outputs)];
        sides.into_iter().flat_map(|(side, ports)| ports.iter().map(move |p| (side, p))).find_map(|(side, p)| {
            match p.shape.first() {
                None => Some(format!("{side} `{}` is a scalar, with no batch dimension", p.name)),
                Some(&d) if d >= 0 => {
                    Some(format!("{side} `{}` has a fixed first dimension of {d} ({:?})", p.name, p.shape))
                }
                Some(_) => None,
            }
        })
    }
}

/// The keys of a ZipMap, in column order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Classes {
    /// Integer class labels.
    Ints(Vec<i64>),
    /// String class labels.
    Strings(Vec<String>),
}

/// In the API: integers or strings (any of, as an empty list is both).
impl utoipa::PartialSchema for Classes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder, ObjectBuilder, Type};
        let of = |t| ArrayBuilder::new().items(ObjectBuilder::new().schema_type(t)).build();
        AnyOfBuilder::new()
            .item(of(Type::Integer))
            .item(of(Type::String))
            .description(Some("The keys of a ZipMap, in column order"))
            .into()
    }
}

impl utoipa::ToSchema for Classes {}

/// ONNX `TensorProto.DataType` values and their protocol names, for the types wasi-nn carries (BOOL as u8).
const CARRIED: &[(i32, &str)] =
    &[(1, "FP32"), (2, "UINT8"), (6, "INT32"), (7, "INT64"), (9, "BOOL"), (10, "FP16"), (11, "FP64"), (16, "BF16")];
/// The other ONNX element types, named for messages.
const OTHERS: &[(i32, &str)] = &[
    (3, "int8"),
    (4, "uint16"),
    (5, "int16"),
    (8, "string"),
    (12, "uint32"),
    (13, "uint64"),
    (14, "complex64"),
    (15, "complex128"),
];
const STRING: i32 = 8;
const FLOAT: i32 = 1;

/// Which side of the graph a port is on, for messages.
#[derive(Clone, Copy)]
enum Side {
    Input,
    Output,
}

impl Side {
    fn word(self) -> &'static str {
        match self {
            Side::Input => "input",
            Side::Output => "output",
        }
    }
}

/// The signature of the main graph `g` of `model`.
pub(super) fn of(model: &str, g: &GraphProto) -> Result<Signature, CheckError> {
    let initialized: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let refuse = |side: Side, name: &str, detail: String| CheckError::Unsupported {
        model: model.to_owned(),
        port: format!("{} `{}`", side.word(), show(name)),
        detail,
    };
    let port = |side: Side, name: &str, ty: Option<&TypeProto>| -> Result<Port, CheckError> {
        let ty = ty.ok_or_else(|| refuse(side, name, "its type is not declared".into()))?;
        if let Some(t) = &ty.tensor_type {
            let datatype = datatype(t.elem_type, side).map_err(|d| refuse(side, name, d))?;
            let shape = t.shape.as_ref().map_or_else(Vec::new, |s| {
                s.dim.iter().map(|d| d.dim_value.filter(|&v| v >= 0).unwrap_or(-1)).collect()
            });
            return Ok(Port { name: name.to_owned(), datatype: datatype.to_owned(), shape, classes: None });
        }
        let zipmap = match side {
            Side::Output => zipmap_classes(g, name).filter(|_| is_zipmap_type(ty)),
            Side::Input => None,
        };
        match zipmap {
            Some(classes) => {
                let columns = match &classes {
                    Classes::Ints(c) => c.len(),
                    Classes::Strings(c) => c.len(),
                };
                let shape = vec![-1, i64::try_from(columns).unwrap_or(i64::MAX)];
                Ok(Port { name: name.to_owned(), datatype: "FP32".into(), shape, classes: Some(classes) })
            }
            None => Err(refuse(side, name, non_tensor(ty))),
        }
    };
    let inputs = g
        .input
        .iter()
        .filter(|v| !initialized.contains(v.name.as_str()))
        .map(|v| port(Side::Input, &v.name, v.r#type.as_ref()))
        .collect::<Result<_, _>>()?;
    let outputs = g.output.iter().map(|v| port(Side::Output, &v.name, v.r#type.as_ref())).collect::<Result<_, _>>()?;
    Ok(Signature { inputs, outputs })
}

fn datatype(elem_type: i32, side: Side) -> Result<&'static str, String> {
    if let Some((_, name)) = CARRIED.iter().find(|(t, _)| *t == elem_type) {
        return Ok(name);
    }
    let name = OTHERS.iter().find(|(t, _)| *t == elem_type).map_or("an unknown element type", |(_, n)| n);
    Err(if elem_type == STRING && matches!(side, Side::Output) {
        "is a string tensor, which wasi-nn cannot carry: train the classifier on integer labels, or convert it \
         with skl2onnx's options={id(model): {'nocl': True}} (labels become class indices)"
            .to_owned()
    } else if elem_type == STRING {
        "is a string tensor, which wasi-nn cannot carry: encode text in the handler (a tokenizer in a handler of \
         your own, see `nimbus new --template text`) and give the graph numbers"
            .to_owned()
    } else {
        format!(
            "is a {name} tensor; wasi-nn carries fp16, bf16, fp32, fp64, uint8, int32, int64 and bool: cast it in the \
             graph (a Cast node) or export it with one of those"
        )
    })
}

/// Whether `ty` is `seq(map(int64 | string, tensor(float)))`, what ZipMap makes.
fn is_zipmap_type(ty: &TypeProto) -> bool {
    let map = ty.sequence_type.as_ref().and_then(|s| s.elem_type.as_ref()).and_then(|e| e.map_type.as_ref());
    map.is_some_and(|m| {
        let value = m.value_type.as_ref().and_then(|v| v.tensor_type.as_ref()).map(|t| t.elem_type);
        matches!(m.key_type, 7 | STRING) && value == Some(FLOAT)
    })
}

/// The class labels of the ZipMap node that makes `output`, in the order ONNX Runtime's maps iterate
/// (sorted keys).
fn zipmap_classes(g: &GraphProto, output: &str) -> Option<Classes> {
    let node: &NodeProto = g
        .node
        .iter()
        .find(|n| n.op_type == "ZipMap" && n.domain == "ai.onnx.ml" && n.output.iter().any(|o| o == output))?;
    let attribute = |name: &str| node.attribute.iter().find(|a: &&AttributeProto| a.name == name);
    if let Some(ints) = attribute("classlabels_int64s").filter(|a| !a.ints.is_empty()) {
        let mut keys = ints.ints.clone();
        keys.sort_unstable();
        return Some(Classes::Ints(keys));
    }
    let strings = attribute("classlabels_strings")?;
    let mut keys: Vec<String> = strings.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect();
    keys.sort_unstable();
    Some(Classes::Strings(keys))
}

/// Why a port that is not a tensor is refused, with what to do instead.
fn non_tensor(ty: &TypeProto) -> String {
    if is_zipmap_type(ty) || ty.sequence_type.is_some() {
        "is a sequence of maps (a ZipMap), not a tensor: convert the classifier without it (skl2onnx: \
         options={id(model): {'zipmap': False}}; onnxmltools: zipmap=False)"
            .to_owned()
    } else if ty.map_type.is_some() {
        "is a map, not a tensor: export the model with tensor outputs".to_owned()
    } else {
        "is not a dense tensor (sparse, optional or opaque), which wasi-nn cannot carry".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str, shape: &[i64]) -> Port {
        Port { name: name.into(), datatype: "FP32".into(), shape: shape.to_vec(), classes: None }
    }

    #[test]
    fn only_a_dynamic_first_dimension_batches() {
        let ok =
            Signature { inputs: vec![port("x", &[-1, 64])], outputs: vec![port("y", &[-1]), port("p", &[-1, 10])] };
        assert_eq!(ok.batch_refusal(), None);
        let fixed = Signature { inputs: vec![port("x", &[1, 3, 224, 224])], ..ok.clone() };
        assert!(fixed.batch_refusal().unwrap().contains("input `x` has a fixed first dimension of 1"));
        let scalar = Signature { outputs: vec![port("n", &[])], ..ok };
        assert!(scalar.batch_refusal().unwrap().contains("output `n` is a scalar"));
    }
}
