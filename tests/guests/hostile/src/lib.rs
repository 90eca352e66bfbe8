//! A guest for tests: the body names the misbehaviour.
//! `echo` answers the body back; `loop` never returns; `alloc:MB` keeps
//! MB megabytes live; `trap` panics; `graph:NAME` runs a graph that may not
//! exist; `shape` feeds the `digits` graph a tensor of the wrong shape;
//! `count` returns how many requests this instance has seen (isolation);
//! `env:KEY` returns an environment variable; `sleep:MS` sleeps; `bytes` asks wasi-nn to load a
//! model from bytes, which the host must refuse.

use nimbus_sdk::{Error, Handler, Model, Request, Response, Result, Tensor};
use std::cell::Cell;

struct Hostile {
    seen: Cell<u32>,
}

impl Handler for Hostile {
    fn init() -> Result<Self> {
        Ok(Hostile { seen: Cell::new(0) })
    }

    fn handle(&self, request: Request) -> Result<Response> {
        self.seen.set(self.seen.get() + 1);
        let text = request.text()?.trim().to_owned();
        match text.split_once(':').unwrap_or((&text, "")) {
            ("echo", _) => Ok(Response::bytes("text/plain", request.body.clone())),
            ("count", _) => Ok(Response::bytes("text/plain", self.seen.get().to_string().into_bytes())),
            ("loop", _) => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            ("alloc", mb) => {
                let mb: usize = mb.parse().map_err(Error::bad_input)?;
                let block = vec![1u8; mb << 20];
                Ok(Response::bytes("text/plain", block.len().to_string().into_bytes()))
            }
            ("sleep", ms) => {
                std::thread::sleep(std::time::Duration::from_millis(ms.parse().map_err(Error::bad_input)?));
                Ok(Response::bytes("text/plain", b"slept".to_vec()))
            }
            ("env", key) => Ok(Response::bytes("text/plain", std::env::var(key).unwrap_or_default().into_bytes())),
            ("bytes", _) => {
                use nimbus_sdk::bindings::wasi::nn::graph::{ExecutionTarget, GraphEncoding, load};
                match load(&[b"not a model".to_vec()], GraphEncoding::Onnx, ExecutionTarget::Cpu) {
                    Ok(_) => Ok(Response::bytes("text/plain", b"loaded from bytes".to_vec())),
                    Err(e) => Err(Error::failed(format!("{:?}: {}", e.code(), e.data()))),
                }
            }
            ("trap", _) => panic!("hostile guest asked to trap"),
            ("graph", name) => {
                Model::load(name)?;
                Ok(Response::bytes("text/plain", b"loaded".to_vec()))
            }
            ("shape", _) => {
                let outputs = Model::load("digits")?.run([("input", Tensor::new(&[1, 3], &[0f32; 3])?)])?;
                Ok(Response::bytes("text/plain", format!("{:?}", outputs.get::<i64>("label")?.data).into_bytes()))
            }
            _ => Err(Error::bad_input(format!("unknown command `{text}`"))),
        }
    }
}

nimbus_sdk::export_handler!(Hostile);
