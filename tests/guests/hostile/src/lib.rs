//! A guest for tests: the body names the misbehaviour.
//! `echo` answers the body back; `loop` never returns; `alloc:MB` keeps
//! MB megabytes live; `trap` panics; `graph:NAME` runs a graph that may not
//! exist; `shape` feeds the `digits` graph a tensor of the wrong shape;
//! `count` returns how many requests this instance has seen (isolation);
//! `env:KEY` returns an environment variable; `sleep:MS` sleeps in WASI; `bytes` asks wasi-nn to
//! load a model from bytes, which the host must refuse; `tensors:N:MB` keeps N host-side tensors
//! of MB each; `cos:N` runs a `ConstantOfShape` graph `model` asking for N floats; `spin` runs graph `model` on a float[1]
//! input `x` (an endless `Loop`).
//! `init` misbehaves when `HOSTILE_INIT` says so: `loop`, `sleep:MS` or `fail`.
//! With `HOSTILE_HANDLE=trap`, every request traps (a version that is broken).

use nimbus_sdk::{Error, Handler, Model, Request, Response, Result, Tensor};
use std::cell::Cell;

struct Hostile {
    seen: Cell<u32>,
}

impl Handler for Hostile {
    fn init() -> Result<Self> {
        let init = std::env::var("HOSTILE_INIT").unwrap_or_default();
        match init.split_once(':').unwrap_or((&init, "")) {
            ("loop", _) => spin(),
            ("sleep", ms) => std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap_or(0))),
            ("fail", why) => return Err(Error::failed(why.to_owned())),
            // Memory `init` keeps: part of every instance's snapshot.
            ("keep", mb) => {
                let kept: &'static mut [u8] = vec![0u8; mb.parse::<usize>().unwrap_or(0) << 20].leak();
                std::hint::black_box(kept);
            }
            _ => {}
        }
        Ok(Hostile { seen: Cell::new(0) })
    }

    fn handle(&self, request: Request) -> Result<Response> {
        self.seen.set(self.seen.get() + 1);
        if std::env::var("HOSTILE_HANDLE").is_ok_and(|h| h == "trap") {
            panic!("this version traps on every request");
        }
        let text = request.text()?.trim().to_owned();
        match text.split_once(':').unwrap_or((&text, "")) {
            ("echo", _) => Ok(Response::bytes("text/plain", request.body.clone())),
            // A line to each of stdout and stderr (the function's log).
            ("say", words) => {
                println!("{words}");
                eprintln!("to stderr: {words}");
                Ok(Response::bytes("text/plain", b"said".to_vec()))
            }
            ("count", _) => Ok(Response::bytes("text/plain", self.seen.get().to_string().into_bytes())),
            ("loop", _) => spin(),
            ("tensors", spec) => {
                let (n, mb) = spec.split_once(':').ok_or_else(|| Error::bad_input("tensors:N:MB"))?;
                let (n, mb): (usize, usize) =
                    (n.parse().map_err(Error::bad_input)?, mb.parse().map_err(Error::bad_input)?);
                let block = vec![0u8; mb << 20];
                let kept: Vec<Tensor> =
                    (0..n).map(|_| Tensor::new(&[block.len() as u32], &block)).collect::<Result<_>>()?;
                Ok(Response::bytes("text/plain", kept.len().to_string().into_bytes()))
            }
            ("cos", n) => {
                let n: i64 = n.parse().map_err(Error::bad_input)?;
                let outputs = Model::load("model")?.run([("shape", Tensor::new(&[1], &[n])?)])?;
                Ok(Response::bytes("text/plain", outputs.get::<f32>("out")?.data.len().to_string().into_bytes()))
            }
            ("spin", _) => {
                let outputs = Model::load("model")?.run([("x", Tensor::new(&[1], &[1f32])?)])?;
                Ok(Response::bytes("text/plain", format!("{:?}", outputs.get::<f32>("y")?.data).into_bytes()))
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
            ("digits", rows) => {
                let rows: u32 = rows.parse().map_err(Error::bad_input)?;
                let pixels: Vec<f32> = (0..rows * 64).map(|i| (i % 17) as f32).collect();
                let outputs = Model::load("digits")?.run([("input", Tensor::new(&[rows, 64], &pixels)?)])?;
                Ok(Response::bytes("text/plain", format!("{:?}", outputs.get::<i64>("label")?.data).into_bytes()))
            }
            ("shape", _) => {
                let outputs = Model::load("digits")?.run([("input", Tensor::new(&[1, 3], &[0f32; 3])?)])?;
                Ok(Response::bytes("text/plain", format!("{:?}", outputs.get::<i64>("label")?.data).into_bytes()))
            }
            _ => Err(Error::bad_input(format!("unknown command `{text}`"))),
        }
    }
}

fn spin() -> ! {
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

nimbus_sdk::export_handler!(Hostile);
