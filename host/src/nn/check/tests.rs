//! Models built in memory with the module's own prost messages, written to a temporary artifact
//! folder and checked.

use super::*;
use std::fs;
use std::os::unix::fs::symlink;

fn entry(key: &str, value: &str) -> StringStringEntryProto {
    StringStringEntryProto { key: key.into(), value: value.into() }
}

/// A tensor whose data is said to be at `location`, with extra external_data entries.
fn external(name: &str, location: &str, extra: &[(&str, &str)]) -> TensorProto {
    let mut external_data = vec![entry("location", location)];
    external_data.extend(extra.iter().map(|(k, v)| entry(k, v)));
    TensorProto { name: name.into(), external_data, data_location: EXTERNAL }
}

fn node(op: &str, name: &str, domain: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto { name: name.into(), op_type: op.into(), attribute, domain: domain.into(), ..Default::default() }
}

fn constant(name: &str, t: TensorProto) -> NodeProto {
    node("Constant", name, "", vec![AttributeProto { name: "value".into(), t: Some(t), ..Default::default() }])
}

fn graph(name: &str, node: Vec<NodeProto>) -> GraphProto {
    GraphProto { name: name.into(), node, ..Default::default() }
}

fn model(graph: GraphProto) -> ModelProto {
    let opset_import = vec![OperatorSetIdProto { domain: String::new(), version: 21 }];
    ModelProto { graph: Some(graph), opset_import, ..Default::default() }
}

#[derive(Debug, Clone, Copy)]
enum Placement {
    Initializer,
    Constant,
    Sparse,
    LoopBody,
}

const PLACEMENTS: [Placement; 4] =
    [Placement::Initializer, Placement::Constant, Placement::Sparse, Placement::LoopBody];

/// A clean model (x + 1) with `t` placed somewhere in it.
fn with_tensor(place: Placement, t: TensorProto) -> ModelProto {
    let mut main = graph("main", vec![node("Add", "add", "", vec![])]);
    match place {
        Placement::Initializer => main.initializer.push(t),
        Placement::Constant => main.node.push(constant("c", t)),
        Placement::Sparse => main.sparse_initializer.push(SparseTensorProto {
            values: Some(t),
            indices: Some(TensorProto { name: "i".into(), ..Default::default() }),
        }),
        Placement::LoopBody => {
            let body = AttributeProto {
                name: "body".into(),
                g: Some(graph("body", vec![constant("c", t)])),
                ..Default::default()
            };
            main.node.push(node("Loop", "loop", "", vec![body]));
        }
    }
    model(main)
}

/// A temporary folder holding `root/` (the artifact folder, with `w.bin` of 16 bytes, `sub/`, and
/// `link.bin`, a symlink to `secret.bin` outside it) and `secret.bin`.
struct Folder {
    dir: tempfile::TempDir,
}

impl Folder {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("w.bin"), [0u8; 16]).unwrap();
        fs::write(dir.path().join("secret.bin"), b"admin-token-1234").unwrap();
        symlink(dir.path().join("secret.bin"), root.join("link.bin")).unwrap();
        Folder { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn check_bytes(&self, bytes: &[u8]) -> Result<ModelInfo, CheckError> {
        let file = self.root().join("model.onnx");
        fs::write(&file, bytes).unwrap();
        let result = check_model(&file, &self.root());
        if let Err(e) = &result {
            let text = e.to_string();
            assert!(!text.contains(self.dir.path().to_str().unwrap()), "server path in message: {text}");
        }
        result
    }

    fn check(&self, m: &ModelProto) -> Result<ModelInfo, CheckError> {
        self.check_bytes(&m.encode_to_vec())
    }
}

fn problem(result: Result<ModelInfo, CheckError>) -> ExternalProblem {
    match result {
        Err(CheckError::ExternalData { problem, .. }) => *problem,
        other => panic!("expected an external-data error, got {other:?}"),
    }
}

#[test]
fn clean_model_passes_and_is_counted() {
    let f = Folder::new();
    let info = f.check(&with_tensor(Placement::LoopBody, TensorProto::default())).unwrap();
    assert_eq!((info.nodes, info.graphs, info.max_depth), (3, 2, 1));
    assert_eq!(info.opsets, vec![(String::new(), 21)]);
    assert!(info.external_files.is_empty() && info.custom_domains.is_empty());
}

#[test]
fn classical_ml_graphs_are_light_and_the_rest_are_not() {
    let f = Folder::new();
    let forest = |extra: Vec<NodeProto>| {
        let mut nodes =
            vec![node("TreeEnsembleClassifier", "trees", "ai.onnx.ml", vec![]), node("Cast", "c", "", vec![])];
        nodes.extend(extra);
        f.check(&model(graph("main", nodes))).unwrap().light
    };
    assert!(forest(vec![]), "trees and a cast");
    assert!(forest(vec![node("ZipMap", "z", "ai.onnx.ml", vec![])]), "with ZipMap");
    assert!(!forest(vec![node("Gemm", "g", "", vec![])]), "a dense layer");
    assert!(!forest(vec![node("Conv", "k", "", vec![])]), "a convolution");
    assert!(!f.check(&with_tensor(Placement::LoopBody, TensorProto::default())).unwrap().light, "a loop");
}

#[test]
fn hostile_external_data_is_refused_everywhere() {
    let f = Folder::new();
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], ExternalProblem);
    let cases: &[Case] = &[
        ("/etc/passwd", &[], ExternalProblem::Absolute),
        ("../secret.bin", &[], ExternalProblem::ParentDir),
        ("sub/../w.bin", &[], ExternalProblem::ParentDir),
        ("link.bin", &[], ExternalProblem::OutsideRoot),
        (MEMORY_ADDRESS_TAG, &[("offset", "4096"), ("length", "8")], ExternalProblem::MemoryAddress),
        ("w.bin/*/_ORT_MEM_ADDR_/*", &[], ExternalProblem::MemoryAddress),
        ("nope.bin", &[], ExternalProblem::Missing),
        ("sub", &[], ExternalProblem::NotAFile),
        ("", &[], ExternalProblem::Empty),
        ("w.bin\0", &[], ExternalProblem::BadCharacter),
        ("sub\\w.bin", &[], ExternalProblem::BadCharacter),
        ("w.bin", &[("offset", "-1")], ExternalProblem::BadNumber { key: "offset".into(), value: "-1".into() }),
        ("w.bin", &[("length", "8 ")], ExternalProblem::BadNumber { key: "length".into(), value: "8 ".into() }),
        ("w.bin", &[("offset", "8"), ("length", "9")], ExternalProblem::OutOfRange { offset: 8, length: 9, size: 16 }),
        ("w.bin", &[("offset", "17")], ExternalProblem::OutOfRange { offset: 17, length: 0, size: 16 }),
        (
            "w.bin",
            &[("offset", "18446744073709551615"), ("length", "1")],
            ExternalProblem::OutOfRange { offset: u64::MAX, length: 1, size: 16 },
        ),
        // Every entry of a repeated key is checked, not only the first (or last).
        ("w.bin", &[("location", "/etc/passwd")], ExternalProblem::Absolute),
        (
            "w.bin",
            &[("offset", "0"), ("offset", "99")],
            ExternalProblem::OutOfRange { offset: 99, length: 0, size: 16 },
        ),
    ];
    for place in PLACEMENTS {
        for (location, extra, expected) in cases {
            let got = problem(f.check(&with_tensor(place, external("W", location, extra))));
            assert_eq!(&got, expected, "{location:?} {extra:?} in {place:?}");
        }
        // No location at all, and external_data entries without data_location = EXTERNAL.
        let mut t = external("W", "", &[("offset", "0")]);
        t.external_data.remove(0);
        assert_eq!(problem(f.check(&with_tensor(place, t))), ExternalProblem::NoLocation);
        let mut t = external("W", "/etc/passwd", &[]);
        t.data_location = 0;
        assert_eq!(problem(f.check(&with_tensor(place, t))), ExternalProblem::Absolute);
    }
}

#[test]
fn messages_name_the_tensor_and_where_it_is() {
    let f = Folder::new();
    let e = f.check(&with_tensor(Placement::LoopBody, external("W", "/etc/passwd", &[]))).unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with("model `model.onnx`: tensor `W` (attribute `value` of node `c` (Constant) in graph `body` in attribute `body` of node `loop` (Loop) in graph `main`) keeps its data at `/etc/passwd`, but that is an absolute path;"), "{text}");
    let e = f.check(&with_tensor(Placement::Sparse, external("W", "link.bin", &[]))).unwrap_err();
    assert!(e.to_string().contains("(sparse initializer in graph `main`)"), "{e}");
}

#[test]
fn external_data_inside_the_folder_passes() {
    let f = Folder::new();
    fs::create_dir(f.root().join("data")).unwrap();
    fs::write(f.root().join("data/real.bin"), [0u8; 8]).unwrap();
    symlink("real.bin", f.root().join("data/alias.bin")).unwrap();
    for place in PLACEMENTS {
        for (location, extra) in [
            ("w.bin", &[("offset", "0"), ("length", "16")][..]),
            ("./w.bin", &[("offset", "16"), ("checksum", "x")][..]),
            ("data/alias.bin", &[("length", "8")][..]),
        ] {
            let info = f.check(&with_tensor(place, external("W", location, extra))).unwrap();
            assert_eq!(info.external_files.len(), 1, "{location} in {place:?}");
        }
    }
    let mut m = with_tensor(Placement::Initializer, external("W", "w.bin", &[]));
    m.graph.as_mut().unwrap().initializer.push(external("V", "data/alias.bin", &[]));
    m.graph.as_mut().unwrap().initializer.push(external("U", "w.bin", &[("offset", "8")]));
    let info = f.check(&m).unwrap();
    assert_eq!(info.external_files, vec![PathBuf::from("data/real.bin"), PathBuf::from("w.bin")]);
    assert_eq!(info.external_bytes, 24);
}

#[test]
fn locations_are_resolved_from_the_model_folder() {
    let f = Folder::new();
    fs::create_dir(f.root().join("models")).unwrap();
    let file = f.root().join("models/m.onnx");
    fs::write(&file, with_tensor(Placement::Initializer, external("W", "w.bin", &[])).encode_to_vec()).unwrap();
    assert_eq!(problem(check_model(&file, &f.root())), ExternalProblem::Missing);
    fs::write(f.root().join("models/w.bin"), [0u8; 4]).unwrap();
    assert_eq!(check_model(&file, &f.root()).unwrap().external_files, vec![PathBuf::from("models/w.bin")]);
}

#[test]
fn external_data_in_functions_and_training_graphs_is_checked() {
    let f = Folder::new();
    let mut m = with_tensor(Placement::Initializer, TensorProto::default());
    m.functions.push(FunctionProto {
        name: "F".into(),
        domain: "my.fns".into(),
        node: vec![constant("c", external("fw", "/etc/passwd", &[]))],
        ..Default::default()
    });
    let e = f.check(&m).unwrap_err();
    assert!(e.to_string().contains("in function `F` (domain `my.fns`)"), "{e}");
    m.functions[0].node.clear();
    let t = external("d", "../x", &[]);
    m.functions[0].attribute_proto.push(AttributeProto { name: "a".into(), t: Some(t), ..Default::default() });
    assert_eq!(problem(f.check(&m)), ExternalProblem::ParentDir);
    m.functions.clear();
    let mut g = graph("algo", vec![]);
    g.initializer.push(external("t", MEMORY_ADDRESS_TAG, &[]));
    m.training_info.push(TrainingInfoProto { initialization: None, algorithm: Some(g) });
    assert_eq!(problem(f.check(&m)), ExternalProblem::MemoryAddress);
}

#[test]
fn custom_domains_are_refused_unless_a_local_function() {
    let f = Folder::new();
    let mut m = with_tensor(Placement::Initializer, TensorProto::default());
    m.graph.as_mut().unwrap().node.push(node("EvilOp", "evil", "evil.custom", vec![]));
    let e = f.check(&m).unwrap_err();
    assert!(matches!(&e, CheckError::CustomOp { op, domain, .. } if op == "EvilOp" && domain == "evil.custom"));
    assert_eq!(
        e.to_string(),
        "model `model.onnx`: custom op `EvilOp` in domain `evil.custom` (node `evil` (EvilOp) in graph `main`): \
         custom operators are not supported; export the model with standard ONNX operators"
    );
    // A function named EvilOp in that domain makes it a call, not a custom op.
    let add = node("Add", "", "", vec![]);
    m.functions.push(FunctionProto {
        name: "EvilOp".into(),
        domain: "evil.custom".into(),
        node: vec![add],
        ..Default::default()
    });
    let info = f.check(&m).unwrap();
    assert_eq!((info.custom_domains, info.functions, info.nodes), (vec!["evil.custom".to_owned()], 1, 3));
    // Same domain, another name; and a custom op inside the function's body.
    m.graph.as_mut().unwrap().node.push(node("Other", "", "evil.custom", vec![]));
    assert!(matches!(f.check(&m), Err(CheckError::CustomOp { op, .. }) if op == "Other"));
    m.graph.as_mut().unwrap().node.pop();
    m.functions[0].node.push(node("Hidden", "", "com.example", vec![]));
    assert!(matches!(f.check(&m), Err(CheckError::CustomOp { op, .. }) if op == "Hidden"));
    for domain in BUILTIN_DOMAINS {
        let mut m = with_tensor(Placement::Initializer, TensorProto::default());
        m.graph.as_mut().unwrap().node[0].domain = (*domain).to_owned();
        f.check(&m).unwrap();
    }
}

#[test]
fn garbage_is_refused() {
    let f = Folder::new();
    assert!(matches!(f.check_bytes(b"not an onnx model\n"), Err(CheckError::Decode { .. })));
    assert!(matches!(f.check_bytes(&[0x3a, 0xff, 0x01]), Err(CheckError::Decode { .. })));
    assert!(matches!(f.check_bytes(b""), Err(CheckError::NoGraph { .. })));
    let mut invalid_utf8 = with_tensor(Placement::Initializer, TensorProto::default()).encode_to_vec();
    invalid_utf8.extend([0x3a, 0x04, 0x12, 0x02, 0xc3, 0x28]); // graph { name: "\xc3(" }
    let e = f.check_bytes(&invalid_utf8).unwrap_err();
    assert!(e.to_string().contains("(invalid string value: data is not UTF-8 encoded in GraphProto.name)"), "{e}");
}

#[test]
fn files_over_2_gib_are_refused_unread() {
    let f = Folder::new();
    let file = f.root().join("big.onnx");
    fs::File::create(&file).unwrap().set_len(MAX_FILE_BYTES + 1).unwrap(); // sparse: no disk used
    assert!(
        matches!(check_model(&file, &f.root()), Err(CheckError::TooLarge { size, .. }) if size == MAX_FILE_BYTES + 1)
    );
    assert!(matches!(check_model(&f.root().join("none.onnx"), &f.root()), Err(CheckError::Read { .. })));
}

/// Protobuf bytes of a model whose graph nests `levels` Loop bodies.
fn nested_bytes(levels: usize) -> Vec<u8> {
    fn wrap(field: u64, inner: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::with_capacity(inner.len() + 12);
        prost::encoding::encode_varint(field << 3 | 2, &mut out);
        prost::encoding::encode_varint(inner.len() as u64, &mut out);
        out.extend(inner);
        out
    }
    // graph.node(1) -> node.attribute(5) -> attribute.g(6) -> graph ...; model.graph(7).
    let graph = (0..levels).fold(Vec::new(), |graph, _| wrap(1, wrap(5, wrap(6, graph))));
    wrap(7, graph)
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let f = Folder::new();
    assert_eq!(f.check_bytes(&nested_bytes(MAX_DEPTH)).unwrap().max_depth, MAX_DEPTH);
    // 33 levels still decode (the 100th message is the innermost graph): the walk's own bound.
    let e = f.check_bytes(&nested_bytes(MAX_DEPTH + 1)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "model `model.onnx`: graph `` in attribute `` of an unnamed `` node in graph `` in attribute `` of an unnamed `` node in graph `` \
         in attribute `` of an unnamed `` node in ... is nested more than 32 subgraphs deep: flatten the nested If/Loop/Scan \
         subgraphs"
    );
    // Past protobuf's limit of 100 nested messages, also on a small stack (as on a worker thread).
    for levels in [34, 1000, 20_000] {
        let bytes = nested_bytes(levels);
        let result = std::thread::scope(|s| {
            std::thread::Builder::new().stack_size(256 << 10).spawn_scoped(s, || f.check_bytes(&bytes)).unwrap().join()
        });
        match result.unwrap() {
            Err(CheckError::TooDeep { detail, .. }) => assert!(detail.contains("100 messages"), "{detail}"),
            other => panic!("{levels} levels: {other:?}"),
        }
    }
}

fn tensor_type(elem_type: i32, dims: &[Option<i64>]) -> TypeProto {
    let dim = dims.iter().map(|&dim_value| Dimension { dim_value }).collect();
    let shape = Some(TensorShapeProto { dim });
    TypeProto { tensor_type: Some(TensorTypeProto { elem_type, shape }), ..Default::default() }
}

fn value(name: &str, ty: TypeProto) -> ValueInfoProto {
    ValueInfoProto { name: name.into(), r#type: Some(ty) }
}

/// `seq(map(int64, tensor(float)))`, what a ZipMap makes.
fn zipmap_type() -> TypeProto {
    let map = MapTypeProto { key_type: 7, value_type: Some(Box::new(tensor_type(1, &[]))) };
    let element = TypeProto { map_type: Some(Box::new(map)), ..Default::default() };
    TypeProto {
        sequence_type: Some(Box::new(SequenceTypeProto { elem_type: Some(Box::new(element)) })),
        ..Default::default()
    }
}

#[test]
fn signatures_report_what_callers_send_and_get() {
    let folder = Folder::new();
    let classes = AttributeProto { name: "classlabels_int64s".into(), ints: vec![2, 0, 1], ..Default::default() };
    let mut zipmap = node("ZipMap", "zip", "ai.onnx.ml", vec![classes]);
    zipmap.output = vec!["probabilities".into()];
    let mut g = graph("g", vec![zipmap]);
    g.initializer.push(TensorProto { name: "w".into(), ..Default::default() });
    g.input = vec![
        value("x", tensor_type(1, &[None, Some(4)])),
        value("mask", tensor_type(9, &[Some(1)])),
        value("w", tensor_type(1, &[Some(4)])),
    ];
    g.output = vec![value("label", tensor_type(7, &[None])), value("probabilities", zipmap_type())];
    let info = folder.check_bytes(&model(g.clone()).encode_to_vec()).unwrap();
    let ports = |ports: &[Port]| -> Vec<(String, String, Vec<i64>)> {
        ports.iter().map(|p| (p.name.clone(), p.datatype.clone(), p.shape.clone())).collect()
    };
    let port = |name: &str, datatype: &str, shape: &[i64]| (name.to_owned(), datatype.to_owned(), shape.to_vec());
    assert_eq!(ports(&info.signature.inputs), [port("x", "FP32", &[-1, 4]), port("mask", "BOOL", &[1])]);
    assert_eq!(
        ports(&info.signature.outputs),
        [port("label", "INT64", &[-1]), port("probabilities", "FP32", &[-1, 3])]
    );
    assert_eq!(info.signature.outputs[1].classes, Some(Classes::Ints(vec![0, 1, 2])), "in key order");

    let refused = |g: GraphProto, says: &[&str]| {
        let e = folder.check_bytes(&model(g).encode_to_vec()).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, CheckError::Unsupported { .. }), "{text}");
        for s in says {
            assert!(text.contains(s), "{text}");
        }
    };
    let mut strings = g.clone();
    strings.input[0] = value("text", tensor_type(8, &[None]));
    refused(strings, &["input `text`", "string tensor"]);
    let mut int8 = g.clone();
    int8.output[0] = value("label", tensor_type(3, &[None]));
    refused(int8, &["output `label`", "int8", "Cast"]);
    let mut no_zipmap = g;
    no_zipmap.node.clear();
    refused(no_zipmap, &["output `probabilities`", "zipmap"]);
}
