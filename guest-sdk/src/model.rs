//! Named graphs. A [`Model`] is only a name until first use in an instance;
//! then its wasi-nn graph and execution context are looked up once and kept
//! for that instance. Handles never outlive `init`: the host snapshots the
//! instance after `init`, and host handles do not survive a snapshot, so
//! [`forget_handles`] drops them before it is taken.

use crate::bindings::wasi::nn::graph::{self, Graph};
use crate::bindings::wasi::nn::inference::GraphExecutionContext;
use crate::bindings::wasi::nn::tensor::Tensor as NnTensor;
use crate::error::{Error, Result};
use crate::tensor::{Element, RawTensor, Tensor, TensorData};
use std::cell::RefCell;
use std::collections::HashMap;

struct Loaded {
    context: GraphExecutionContext,
    // Declared after `context` so the context is dropped first.
    _graph: Graph,
}

thread_local! {
    static LOADED: RefCell<HashMap<String, Loaded>> = RefCell::new(HashMap::new());
}

pub(crate) fn forget_handles() {
    LOADED.with(|loaded| loaded.borrow_mut().clear());
}

/// A model from the function's artifacts, by the stem of its `.onnx` file.
#[derive(Debug, Clone)]
pub struct Model {
    name: String,
}

impl Model {
    /// Checks that the graph exists and names it. Call it from
    /// [`crate::Handler::init`] so a missing model fails the deploy.
    pub fn load(name: &str) -> Result<Self> {
        let model = Model { name: name.to_owned() };
        model.with_context(|_| Ok(()))?;
        Ok(model)
    }

    /// The graph's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the graph on named inputs (moved to the host); returns every output.
    pub fn run<'a>(&self, inputs: impl IntoIterator<Item = (&'a str, Tensor)>) -> Result<Outputs> {
        self.with_context(|context| {
            let inputs: Vec<(String, NnTensor)> = inputs.into_iter().map(|(name, t)| (name.to_owned(), t.0)).collect();
            Ok(Outputs { model: self.name.clone(), tensors: context.compute(inputs)? })
        })
    }

    fn with_context<R>(&self, f: impl FnOnce(&GraphExecutionContext) -> Result<R>) -> Result<R> {
        LOADED.with(|loaded| {
            let mut loaded = loaded.borrow_mut();
            if !loaded.contains_key(&self.name) {
                let graph = graph::load_by_name(&self.name)
                    .map_err(|e| Error::failed(format!("model `{}`: {}", self.name, e.data())))?;
                let context = graph.init_execution_context()?;
                loaded.insert(self.name.clone(), Loaded { context, _graph: graph });
            }
            f(&loaded[&self.name].context)
        })
    }
}

/// The outputs of one [`Model::run`], by name.
#[derive(Debug)]
pub struct Outputs {
    model: String,
    tensors: Vec<(String, NnTensor)>,
}

impl Outputs {
    /// The output called `name`, read as elements of type `T`.
    pub fn get<T: Element>(&self, name: &str) -> Result<TensorData<T>> {
        let (_, tensor) = self
            .tensors
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| Error::failed(format!("model `{}` has no output `{name}`", self.model)))?;
        TensorData::read(name, tensor)
    }

    /// The outputs' names, in the order the host returned them.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|(n, _)| n.as_str())
    }

    /// Every output with its name, as bytes of whatever element type it
    /// holds (see [`RawTensor`]).
    pub fn into_raw(self) -> Vec<(String, RawTensor)> {
        self.tensors.iter().map(|(n, t)| (n.clone(), RawTensor::read(t))).collect()
    }
}
