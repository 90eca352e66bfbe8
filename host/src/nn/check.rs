//! Checks a user's ONNX file before ONNX Runtime opens it.
//!
//! A tensor in an ONNX file may keep its bytes in another file ("external data": a path relative to
//! the model, with an offset and a length) or, with ONNX Runtime's private `*/_ORT_MEM_ADDR_/*` tag,
//! at a raw address in the process. ONNX Runtime reads them while it builds a session, before any of
//! the host's limits apply, and what it refuses differs between versions: ORT 1.23 followed absolute
//! paths, `..` and symlinks out of the model's folder and leaked those files (the admin token, say)
//! as weights; 1.32 refuses them, with messages that name server paths. So the host must not rely on
//! ONNX Runtime, and decides here, on its own:
//!
//! - external data must be a relative path, without `..`, resolving (symlinks followed) to a regular
//!   file inside the artifact folder, with offset and length inside that file;
//! - operators must come from a domain built into ONNX Runtime's CPU provider or be functions the
//!   model defines: no custom-op library is ever registered, so the message says what to do instead;
//! - nesting is bounded (protobuf's 100 nested messages, as in ONNX Runtime, and [`MAX_DEPTH`]
//!   subgraph levels), so a hostile file is an error, not a stack overflow.
//!
//! Every tensor is visited: initializers, sparse initializers, attributes, If/Loop/Scan subgraphs,
//! model-local functions, training graphs. What a valid model computes (ConstantOfShape of 10^10
//! elements, a Loop of 2^50 trips) is left to deadlines and memory accounting; [`ModelInfo::nodes`]
//! lets the host cap a graph's size. Decoding uses hand-declared `prost` messages holding only the
//! fields needed: tensor data (`raw_data`, `float_data`, ...) is skipped, not copied.

mod signature;

pub use signature::{Classes, Port, Signature};

use prost::Message;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Protobuf's limit on a message, and so on an ONNX file: 2 GiB less one byte.
pub const MAX_FILE_BYTES: u64 = (1 << 31) - 1;
/// How deep subgraphs may nest (main graph: 0). Protobuf's nesting limit stops files at 33 levels
/// (three messages a level); this bounds the walk regardless of the decoder.
pub const MAX_DEPTH: usize = 32;
/// Operator domains that ONNX Runtime's CPU provider implements (1.32's kernel registry), plus
/// `ai.onnx`, its alias for `""`. ONNX Runtime also names `ai.onnx.preview.training`,
/// `com.microsoft.experimental`, `org.pytorch.aten` and `com.ms.internal.nhwc`, but the CPU build
/// has no kernels there (sessions fail with "not a registered function/op" or "Could not find an
/// implementation"), and the domains of other providers (DirectML, VitisAI, ...) are never loaded.
pub const BUILTIN_DOMAINS: &[&str] = &["", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc"];
/// Operators of the standard domain that classical-ML converters (skl2onnx,
/// onnxmltools) put around `ai.onnx.ml` ones: a few element-wise or shape
/// operations per row (see [`ModelInfo::light`]).
const GLUE_OPS: &[&str] = &[
    "Identity",
    "Cast",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Concat",
    "Gather",
    "Slice",
    "Shape",
    "ArgMax",
    "ArgMin",
    "Softmax",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Abs",
    "Neg",
    "Exp",
    "Sigmoid",
    "Clip",
    "Max",
    "Min",
    "Where",
    "Not",
    "Equal",
    "Greater",
    "Less",
];
/// ONNX Runtime's tag for external data at a memory address (the `offset` is then a pointer).
const MEMORY_ADDRESS_TAG: &str = "*/_ORT_MEM_ADDR_/*";
/// `TensorProto.DataLocation.EXTERNAL`.
const EXTERNAL: i32 = 1;

/// Why a model file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The file (or the artifact folder) could not be read.
    #[error("model `{model}` could not be read: {cause}")]
    Read { model: String, cause: std::io::Error },
    /// Larger than protobuf can hold.
    #[error(
        "model `{model}` is {size} bytes, over protobuf's 2 GiB limit: save the weights as external data next to \
         the model (onnx.save_model(model, path, save_as_external_data=True)) and deploy both files"
    )]
    TooLarge { model: String, size: u64 },
    /// Not a protobuf message of the ONNX model's shape.
    #[error("model `{model}` is not a valid ONNX file ({reason}): export it again, and check it with onnx.checker")]
    Decode { model: String, reason: String },
    /// Decodes, but holds no graph.
    #[error("model `{model}` has no graph: is it an ONNX model? Export it again, and check it with onnx.checker")]
    NoGraph { model: String },
    /// Subgraphs (or protobuf messages) nested too deeply.
    #[error("model `{model}`: {detail}: flatten the nested If/Loop/Scan subgraphs")]
    TooDeep { model: String, detail: String },
    /// A tensor's external data is not a file inside the artifact folder.
    #[error(
        "model `{model}`: tensor `{tensor}` ({place}) keeps its data at `{location}`, but {problem}; external data \
         must be a file in the artifact folder, named relative to the model, as onnx.save_model(model, path, \
         save_as_external_data=True) writes it"
    )]
    ExternalData { model: String, tensor: String, place: String, location: String, problem: Box<ExternalProblem> },
    /// An input or output wasi-nn cannot carry.
    #[error("model `{model}`: {port} {detail}")]
    Unsupported { model: String, port: String, detail: String },
    /// An operator from a domain ONNX Runtime does not provide.
    #[error(
        "model `{model}`: custom op `{op}` in domain `{domain}` ({place}): custom operators are not supported; \
         export the model with standard ONNX operators"
    )]
    CustomOp { model: String, op: String, domain: String, place: String },
}

/// What is wrong with one tensor's external data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExternalProblem {
    #[error("it has no `location` entry")]
    NoLocation,
    #[error("the location is empty")]
    Empty,
    #[error("that is ONNX Runtime's in-memory address tag, which reads process memory")]
    MemoryAddress,
    #[error("the location contains a NUL character or a backslash")]
    BadCharacter,
    #[error("that is an absolute path")]
    Absolute,
    #[error("the path contains a `..` component")]
    ParentDir,
    #[error("no file exists there")]
    Missing,
    #[error("that path cannot be opened ({0})")]
    Unreadable(std::io::ErrorKind),
    #[error("that path leads out of the artifact folder (through a symbolic link)")]
    OutsideRoot,
    #[error("that is not a regular file")]
    NotAFile,
    #[error("its `{key}` entry `{value}` is not a non-negative integer")]
    BadNumber { key: String, value: String },
    #[error("offset {offset} + length {length} runs past the end of the {size}-byte file")]
    OutOfRange { offset: u64, length: u64, size: u64 },
}

/// What a model holds, for the host's limits and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelInfo {
    /// Nodes in every graph, subgraph, function body and training graph.
    pub nodes: usize,
    /// Graphs: the main graph, every subgraph and every training graph.
    pub graphs: usize,
    /// Functions defined in the model.
    pub functions: usize,
    /// The deepest subgraph level (0: no subgraphs).
    pub max_depth: usize,
    /// Domains outside [`BUILTIN_DOMAINS`] that nodes use (all of model-local functions), sorted.
    pub custom_domains: Vec<String>,
    /// Opset imports: (domain, version).
    pub opsets: Vec<(String, i64)>,
    /// External data files, relative to the artifact folder, sorted, each once.
    pub external_files: Vec<PathBuf>,
    /// Their total size in bytes.
    pub external_bytes: u64,
    /// The main graph's inputs and outputs.
    pub signature: Signature,
    /// Every node is a classical-ML operator (`ai.onnx.ml`: trees, linear
    /// models, scalers) or glue around one ([`GLUE_OPS`]): a run is a few
    /// microseconds per row, less than waking a second intra-op thread
    /// costs, so such a graph runs on one.
    pub light: bool,
}

/// Checks the ONNX file at `file` (inside the artifact folder `root`) before ONNX Runtime opens it.
pub fn check_model(file: &Path, root: &Path) -> Result<ModelInfo, CheckError> {
    let name = file.strip_prefix(root).ok().or_else(|| file.file_name().map(Path::new)).unwrap_or(file);
    let model = show(&name.display().to_string());
    let read_error = |cause| CheckError::Read { model: model.clone(), cause };
    let root = root.canonicalize().map_err(read_error)?;
    let f = std::fs::File::open(file).map_err(read_error)?;
    let size = f.metadata().map_err(read_error)?.len();
    let mut bytes = Vec::new();
    if size <= MAX_FILE_BYTES {
        f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(read_error)?;
    }
    if size > MAX_FILE_BYTES || bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(CheckError::TooLarge { model, size: size.max(bytes.len() as u64) });
    }
    let proto = ModelProto::decode(bytes.as_slice()).map_err(|e| decode_error(&model, &e))?;
    drop(bytes);
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let functions = proto.functions.iter().map(|f| (f.domain.as_str(), f.name.as_str())).collect();
    let (info, domains, files) = (ModelInfo::default(), BTreeSet::new(), BTreeMap::new());
    Walk { model, dir, root, functions, trail: Vec::new(), info, domains, files, heavy: false }.model(&proto)
}

fn decode_error(model: &str, e: &prost::DecodeError) -> CheckError {
    // prost's message: "failed to decode Protobuf message: Msg.field: Msg.field: description".
    let text = e.to_string();
    let mut rest = text.strip_prefix("failed to decode Protobuf message: ").unwrap_or(&text);
    let mut innermost = None;
    while let Some((head, tail)) = rest.split_once(": ").filter(|(h, _)| h.contains('.') && !h.contains(' ')) {
        innermost.get_or_insert(head);
        rest = tail;
    }
    let model = model.to_owned();
    match innermost {
        _ if rest == "recursion limit reached" => {
            CheckError::TooDeep { model, detail: "the file nests more than protobuf's limit of 100 messages".into() }
        }
        Some(at) => CheckError::Decode { model, reason: format!("{rest} in {at}") },
        None => CheckError::Decode { model, reason: rest.to_owned() },
    }
}

/// A user-supplied string, fit for a message: escaped and cut to 120 characters.
fn show(s: &str) -> String {
    let escaped: String = s.escape_debug().collect();
    match escaped.char_indices().nth(120) {
        Some((cut, _)) => format!("{}...", &escaped[..cut]),
        None => escaped,
    }
}

fn node_label(n: &NodeProto) -> String {
    match n.name.as_str() {
        "" => format!("an unnamed `{}` node", show(&n.op_type)),
        name => format!("node `{}` ({})", show(name), show(&n.op_type)),
    }
}

/// One step of the way from the model to where the walk is; described only for a message.
#[derive(Clone, Copy)]
enum Step<'m> {
    Graph(&'m GraphProto),
    /// An attribute of a node, or a function's default for it.
    Attribute(&'m AttributeProto, Option<&'m NodeProto>),
    Function(&'m FunctionProto),
    Training(usize, &'static str),
}

impl Step<'_> {
    fn describe(self) -> String {
        match self {
            Step::Graph(g) => format!("graph `{}`", show(&g.name)),
            Step::Attribute(a, Some(n)) => format!("attribute `{}` of {}", show(&a.name), node_label(n)),
            Step::Attribute(a, None) => format!("default attribute `{}`", show(&a.name)),
            Step::Function(f) => format!("function `{}` (domain `{}`)", show(&f.name), show(&f.domain)),
            Step::Training(i, part) => format!("training_info[{i}].{part}"),
        }
    }
}

struct Walk<'m> {
    model: String,
    /// The model file's folder: ONNX Runtime resolves locations against it.
    dir: PathBuf,
    /// The canonical artifact folder.
    root: PathBuf,
    /// (domain, name) of the model's functions.
    functions: HashSet<(&'m str, &'m str)>,
    trail: Vec<Step<'m>>,
    info: ModelInfo,
    domains: BTreeSet<&'m str>,
    files: BTreeMap<PathBuf, u64>,
    /// A node outside what [`ModelInfo::light`] allows was seen.
    heavy: bool,
}

impl<'m> Walk<'m> {
    fn model(mut self, proto: &'m ModelProto) -> Result<ModelInfo, CheckError> {
        let graph = proto.graph.as_ref().ok_or_else(|| CheckError::NoGraph { model: self.model.clone() })?;
        self.graph(graph, 0)?;
        self.info.signature = signature::of(&self.model, graph)?;
        for f in &proto.functions {
            self.trail.push(Step::Function(f));
            for a in &f.attribute_proto {
                self.attribute(a, None, 0)?;
            }
            self.nodes(&f.node, 0)?;
            self.trail.pop();
        }
        for (i, t) in proto.training_info.iter().enumerate() {
            for (part, g) in [("initialization", &t.initialization), ("algorithm", &t.algorithm)] {
                self.trail.push(Step::Training(i, part));
                g.as_ref().map_or(Ok(()), |g| self.graph(g, 0))?;
                self.trail.pop();
            }
        }
        self.info.functions = proto.functions.len();
        self.info.opsets = proto.opset_import.iter().map(|o| (o.domain.clone(), o.version)).collect();
        self.info.custom_domains = self.domains.iter().map(|d| (*d).to_owned()).collect();
        self.info.external_bytes = self.files.values().sum();
        self.info.external_files = self.files.into_keys().collect();
        self.info.light = !self.heavy;
        Ok(self.info)
    }

    /// Where the walk is, innermost first (at most six steps), after `what`.
    fn place(&self, what: &str) -> String {
        let mut parts: Vec<String> = Some(what).filter(|w| !w.is_empty()).map(str::to_owned).into_iter().collect();
        parts.extend(self.trail.iter().rev().take(6).map(|s| s.describe()));
        if self.trail.len() > 6 {
            parts.push("...".to_owned());
        }
        parts.join(" in ")
    }

    fn graph(&mut self, g: &'m GraphProto, depth: usize) -> Result<(), CheckError> {
        self.trail.push(Step::Graph(g));
        if depth > MAX_DEPTH {
            let detail = format!("{} is nested more than {MAX_DEPTH} subgraphs deep", self.place(""));
            return Err(CheckError::TooDeep { model: self.model.clone(), detail });
        }
        self.info.graphs += 1;
        self.info.max_depth = self.info.max_depth.max(depth);
        for t in &g.initializer {
            self.tensor(t, "initializer")?;
        }
        for t in g.sparse_initializer.iter().flat_map(|s| s.values.iter().chain(&s.indices)) {
            self.tensor(t, "sparse initializer")?;
        }
        self.nodes(&g.node, depth)?;
        self.trail.pop();
        Ok(())
    }

    fn nodes(&mut self, nodes: &'m [NodeProto], depth: usize) -> Result<(), CheckError> {
        for n in nodes {
            self.info.nodes += 1;
            let domain = n.domain.as_str();
            let standard = matches!(domain, "" | "ai.onnx");
            self.heavy |= !(domain == "ai.onnx.ml" || standard && GLUE_OPS.contains(&n.op_type.as_str()));
            if !BUILTIN_DOMAINS.contains(&domain) {
                if !self.functions.contains(&(domain, n.op_type.as_str())) {
                    let (op, domain, place) = (show(&n.op_type), show(domain), self.place(&node_label(n)));
                    return Err(CheckError::CustomOp { model: self.model.clone(), op, domain, place });
                }
                self.domains.insert(domain);
            }
            for a in &n.attribute {
                self.attribute(a, Some(n), depth)?;
            }
        }
        Ok(())
    }

    /// An attribute of node `n`, or a function's default when `n` is `None`.
    fn attribute(&mut self, a: &'m AttributeProto, n: Option<&'m NodeProto>, depth: usize) -> Result<(), CheckError> {
        self.trail.push(Step::Attribute(a, n));
        let sparse = a.sparse_tensor.iter().chain(&a.sparse_tensors).flat_map(|s| s.values.iter().chain(&s.indices));
        for t in a.t.iter().chain(&a.tensors).chain(sparse) {
            self.tensor(t, "")?;
        }
        for g in a.g.iter().chain(&a.graphs) {
            self.graph(g, depth + 1)?;
        }
        self.trail.pop();
        Ok(())
    }

    fn tensor(&mut self, t: &TensorProto, what: &str) -> Result<(), CheckError> {
        if t.data_location != EXTERNAL && t.external_data.is_empty() {
            return Ok(());
        }
        let entries = |key: &'static str| t.external_data.iter().filter(move |e| e.key == key).map(|e| &e.value);
        let fail = |location: &str, problem| CheckError::ExternalData {
            model: self.model.clone(),
            tensor: show(&t.name),
            place: self.place(what),
            location: show(location),
            problem: Box::new(problem),
        };
        if entries("location").next().is_none() {
            return Err(fail("", ExternalProblem::NoLocation));
        }
        // Several entries of one key: ONNX Runtime takes the last; every one must pass.
        let number = |key: &'static str| {
            entries(key).try_fold(0u64, |max, v| match v.parse::<u64>() {
                Ok(n) => Ok(max.max(n)),
                Err(_) => Err(ExternalProblem::BadNumber { key: key.to_owned(), value: show(v) }),
            })
        };
        let mut found = Vec::new();
        for location in entries("location") {
            let checked = self.resolve(location).and_then(|(path, size)| {
                let (offset, length) = (number("offset")?, number("length")?);
                match offset.checked_add(length) {
                    Some(end) if end <= size => Ok((path, size)),
                    _ => Err(ExternalProblem::OutOfRange { offset, length, size }),
                }
            });
            found.push(checked.map_err(|problem| fail(location, problem))?);
        }
        self.files.extend(found);
        Ok(())
    }

    /// The file at `location`, relative to the artifact folder, and its size.
    fn resolve(&self, location: &str) -> Result<(PathBuf, u64), ExternalProblem> {
        let path = Path::new(location);
        if location.contains(MEMORY_ADDRESS_TAG) {
            Err(ExternalProblem::MemoryAddress)
        } else if location.contains(['\0', '\\']) {
            Err(ExternalProblem::BadCharacter)
        } else if location.is_empty() {
            Err(ExternalProblem::Empty)
        } else if path.has_root() || path.is_absolute() {
            Err(ExternalProblem::Absolute)
        } else if path.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
            Err(ExternalProblem::ParentDir)
        } else {
            let real = self.dir.join(path).canonicalize().map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => ExternalProblem::Missing,
                kind => ExternalProblem::Unreadable(kind),
            })?;
            let relative = real.strip_prefix(&self.root).map_err(|_| ExternalProblem::OutsideRoot)?;
            let meta = std::fs::metadata(&real).map_err(|e| ExternalProblem::Unreadable(e.kind()))?;
            if !meta.is_file() {
                return Err(ExternalProblem::NotAFile);
            }
            Ok((relative.to_path_buf(), meta.len()))
        }
    }
}

/// Declares prost messages one field a line, `name: Type = kind [label] tag`, which becomes
/// `#[prost(kind, label, tag = tag)] name: Type` in a `#[derive(Clone, PartialEq, prost::Message)]` struct.
macro_rules! messages {
    ($($message:ident { $($field:ident: $ty:ty = $kind:ident $($label:ident)? $tag:literal,)* })*) => {$(
        #[derive(Clone, PartialEq, prost::Message)]
        struct $message { $(#[prost($kind, $($label,)? tag = $tag)] $field: $ty,)* }
    )*};
}

// The parts of onnx.proto (onnx 1.23.2) that the checks read; every other field, tensor data
// included, is skipped while decoding.
messages! {
    ModelProto {
        graph: Option<GraphProto> = message optional 7,
        opset_import: Vec<OperatorSetIdProto> = message repeated 8,
        training_info: Vec<TrainingInfoProto> = message repeated 20,
        functions: Vec<FunctionProto> = message repeated 25,
    }
    OperatorSetIdProto {
        domain: String = string 1,
        version: i64 = int64 2,
    }
    TrainingInfoProto {
        initialization: Option<GraphProto> = message optional 1,
        algorithm: Option<GraphProto> = message optional 2,
    }
    FunctionProto {
        name: String = string 1,
        node: Vec<NodeProto> = message repeated 7,
        domain: String = string 10,
        attribute_proto: Vec<AttributeProto> = message repeated 11,
    }
    GraphProto {
        node: Vec<NodeProto> = message repeated 1,
        name: String = string 2,
        initializer: Vec<TensorProto> = message repeated 5,
        input: Vec<ValueInfoProto> = message repeated 11,
        output: Vec<ValueInfoProto> = message repeated 12,
        sparse_initializer: Vec<SparseTensorProto> = message repeated 15,
    }
    NodeProto {
        output: Vec<String> = string repeated 2,
        name: String = string 3,
        op_type: String = string 4,
        attribute: Vec<AttributeProto> = message repeated 5,
        domain: String = string 7,
    }
    AttributeProto {
        name: String = string 1,
        t: Option<TensorProto> = message optional 5,
        g: Option<GraphProto> = message optional 6,
        ints: Vec<i64> = int64 repeated 8,
        strings: Vec<Vec<u8>> = bytes repeated 9,
        tensors: Vec<TensorProto> = message repeated 10,
        graphs: Vec<GraphProto> = message repeated 11,
        sparse_tensor: Option<SparseTensorProto> = message optional 22,
        sparse_tensors: Vec<SparseTensorProto> = message repeated 23,
    }
    TensorProto {
        name: String = string 8,
        external_data: Vec<StringStringEntryProto> = message repeated 13,
        data_location: i32 = int32 14,
    }
    StringStringEntryProto {
        key: String = string 1,
        value: String = string 2,
    }
    SparseTensorProto {
        values: Option<TensorProto> = message optional 1,
        indices: Option<TensorProto> = message optional 2,
    }
    ValueInfoProto {
        name: String = string 1,
        r#type: Option<TypeProto> = message optional 2,
    }
    TensorTypeProto {
        elem_type: i32 = int32 1,
        shape: Option<TensorShapeProto> = message optional 2,
    }
    TensorShapeProto {
        dim: Vec<Dimension> = message repeated 1,
    }
    Dimension {
        dim_value: Option<i64> = int64 optional 1,
    }
}

// `TypeProto` nests itself (a sequence of maps of tensors), which needs boxed fields the macro does
// not declare. Its `value` oneof is read as plain optional fields: on the wire they are the same.
#[derive(Clone, PartialEq, prost::Message)]
struct TypeProto {
    #[prost(message, optional, tag = 1)]
    tensor_type: Option<TensorTypeProto>,
    #[prost(message, optional, boxed, tag = 4)]
    sequence_type: Option<Box<SequenceTypeProto>>,
    #[prost(message, optional, boxed, tag = 5)]
    map_type: Option<Box<MapTypeProto>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SequenceTypeProto {
    #[prost(message, optional, boxed, tag = 1)]
    elem_type: Option<Box<TypeProto>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MapTypeProto {
    #[prost(int32, tag = 1)]
    key_type: i32,
    #[prost(message, optional, boxed, tag = 2)]
    value_type: Option<Box<TypeProto>>,
}

#[cfg(test)]
mod tests;
