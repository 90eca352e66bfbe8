//! The handler Nimbus runs for a model-only deploy (`nimbus deploy NAME
//! --model-dir DIR` without a handler of one's own): the folder's one graph,
//! served as it is over the Open Inference Protocol (KServe v2, Triton).
//! Requests and answers are the protocol's infer call, in JSON or with
//! binary tensors, as the host frames them (see `nimbus_sdk::oip`); every
//! input goes to the graph by name and every output asked for comes back.

use nimbus_sdk::{Error, Handler, Model, Request, Response, Result, oip};

const MODEL_DIR: &str = "/model";

struct Builtin {
    model: Model,
}

impl Handler for Builtin {
    fn init() -> Result<Self> {
        let entries = std::fs::read_dir(MODEL_DIR).map_err(|e| Error::failed(format!("reading {MODEL_DIR}: {e}")))?;
        let mut graphs = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| Error::failed(format!("reading {MODEL_DIR}: {e}")))?.path();
            if path.extension().is_some_and(|e| e == "onnx") && path.is_file() {
                graphs.extend(path.file_stem().and_then(|s| s.to_str()).map(str::to_owned));
            }
        }
        graphs.sort();
        match graphs.as_slice() {
            [graph] => Ok(Builtin { model: Model::load(graph)? }),
            _ => {
                let found = match graphs.as_slice() {
                    [] => "none".to_owned(),
                    many => format!("{}: {}.onnx", many.len(), many.join(".onnx, ")),
                };
                Err(Error::failed(format!(
                    "a model-only deploy serves exactly one graph (one .onnx at the top of the model folder); found \
                     {found}: deploy each graph as its own function, or write a handler (`nimbus new`)"
                )))
            }
        }
    }

    fn handle(&self, request: Request) -> Result<Response> {
        let infer = oip::decode(&request)?;
        drop(request);
        let outputs = self.model.run(infer.tensors()?)?;
        // Read per request: the host sets these for requests, not for init.
        oip::encode(&infer.request, &oip::Context::from_env(), outputs.into_raw())
    }
}

nimbus_sdk::export_handler!(Builtin);
