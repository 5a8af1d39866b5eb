//! The registry of task functions a worker can run.
//!
//! Typed functions take serde params (from the graph's JSON), inputs decoded from their
//! producers' outputs with postcard, and return a serde output encoded with postcard. A [`Raw`]
//! input is the producer's bytes as they are, so typed functions can consume built-ins' plain
//! bytes. Raw functions see bytes in and return bytes out.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use drover_graph::decode::{decode_shared, SharedValue, SHARED_LOADER};
pub use drover_graph::decode::{DecodeInput, DecodeInputs, InputRef, Object};
use drover_graph::{Loader, TaskFn};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::local::{Hook, WorkerLocal};

pub use crate::context::{LoaderFn, RawFn, TaskContext};

/// The error a typed task function or loader returns: any error (`?` converts a
/// `std::error::Error`, a `String` or a `&str`), reported as the task's message. A body that
/// never fails writes `Ok(value)` and needs no annotation.
pub type TaskError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a typed task function or loader returns.
pub type TaskResult<T> = Result<T, TaskError>;

/// Named task functions and once-cell loaders, and the worker's start and exit hooks.
#[derive(Clone, Default)]
pub struct Registry {
    functions: BTreeMap<String, Arc<RawFn>>,
    loaders: BTreeMap<String, Arc<LoaderFn>>,
    start_hooks: Vec<Arc<Hook>>,
    exit_hooks: Vec<Arc<Hook>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(self.functions.keys().chain(self.loaders.keys()))
            .finish()
    }
}

/// The bytes of an input exactly as produced (no decoding): use it in a typed function's
/// `Inputs` to take a raw function's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raw(pub Bytes);

impl DecodeInput for Raw {
    type Value = Raw;
    fn decode_input(input: InputRef<'_>) -> Result<Raw, String> {
        Ok(Raw(input.bytes.clone()))
    }
}

/// Encodes a typed output (postcard), as typed functions do.
pub fn encode_output<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    postcard::to_stdvec(value).map_err(|e| format!("cannot encode output: {e}"))
}

/// Parses params JSON text into `P` (missing params are `null`).
pub fn parse_params<P: DeserializeOwned>(params: Option<&str>) -> Result<P, String> {
    serde_json::from_str(params.unwrap_or("null"))
        .map_err(|e| format!("params do not fit {}: {e}", std::any::type_name::<P>()))
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The stock registry: every built-in (see [`crate::builtins`]).
    pub fn with_builtins() -> Registry {
        let mut r = Registry::new();
        crate::builtins::register(&mut r);
        r
    }

    /// Registers a raw function under `name` (replacing any earlier one).
    pub fn register_raw(
        &mut self,
        name: &str,
        f: impl Fn(&TaskContext, Option<&str>, &[Bytes]) -> Result<Vec<u8>, String>
            + Send
            + Sync
            + 'static,
    ) -> &mut Registry {
        self.functions.insert(name.to_owned(), Arc::new(f));
        self
    }

    /// Registers the body of the typed function `F`. It receives its inputs decoded: serde
    /// types as themselves, [`PerWorker<T>`](drover_graph::PerWorker) and
    /// [`Shared<T>`](drover_graph::Shared) as `Arc<T>`, and returns a [`TaskResult`]: an error
    /// fails the task with the error's message.
    ///
    /// ```
    /// # use drover_graph::TaskFn;
    /// struct Halve;
    /// impl TaskFn for Halve {
    ///     const NAME: &'static str = "halve";
    ///     type Params = f64;
    ///     type Inputs = ();
    ///     type Output = f64;
    /// }
    /// let mut registry = drover_worker::Registry::new();
    /// registry.register::<Halve>(|_ctx, x, ()| Ok(x / 2.0));
    /// ```
    #[allow(clippy::type_complexity)]
    pub fn register<F>(
        &mut self,
        f: impl Fn(&TaskContext, F::Params, <F::Inputs as DecodeInputs>::Value) -> TaskResult<F::Output>
            + Send
            + Sync
            + 'static,
    ) -> &mut Registry
    where
        F: TaskFn,
        F::Params: DeserializeOwned,
        F::Inputs: DecodeInputs,
        F::Output: Serialize,
    {
        self.register_raw(F::NAME, move |ctx, params, inputs| {
            let params = parse_params::<F::Params>(params)?;
            let inputs = F::Inputs::decode_inputs(inputs, &ctx.objects)?;
            let out = f(ctx, params, inputs).map_err(|e| e.to_string())?;
            encode_output(&out)
        })
    }

    /// Registers the body of the typed once-cell loader `L`: it makes the object from the
    /// params; each worker process runs it at most once per cell (an error fails that load
    /// with its message).
    pub fn register_loader<L>(
        &mut self,
        f: impl Fn(&TaskContext, L::Params) -> TaskResult<L::Object> + Send + Sync + 'static,
    ) -> &mut Registry
    where
        L: Loader,
        L::Params: DeserializeOwned,
    {
        self.register_loader_raw(L::NAME, move |ctx, params| {
            let params = parse_params::<L::Params>(params)?;
            let object = f(ctx, params).map_err(|e| e.to_string())?;
            Ok(Arc::new(object) as Object)
        })
    }

    /// Registers an untyped loader under `name`.
    pub fn register_loader_raw(
        &mut self,
        name: &str,
        f: impl Fn(&TaskContext, Option<&str>) -> Result<Object, String> + Send + Sync + 'static,
    ) -> &mut Registry {
        self.loaders.insert(name.to_owned(), Arc::new(f));
        self
    }

    /// Runs `hook` when a worker starts (before it first connects), e.g. to set up its state.
    pub fn on_worker_start(
        &mut self,
        hook: impl Fn(&WorkerLocal) + Send + Sync + 'static,
    ) -> &mut Registry {
        self.start_hooks.push(Arc::new(hook));
        self
    }

    /// Runs `hook` when a worker is about to exit (after its last task, whatever the reason).
    pub fn on_worker_exit(
        &mut self,
        hook: impl Fn(&WorkerLocal) + Send + Sync + 'static,
    ) -> &mut Registry {
        self.exit_hooks.push(Arc::new(hook));
        self
    }

    pub(crate) fn run_start_hooks(&self, worker: &WorkerLocal) {
        for h in &self.start_hooks {
            h(worker);
        }
    }

    pub(crate) fn run_exit_hooks(&self, worker: &WorkerLocal) {
        for h in &self.exit_hooks {
            h(worker);
        }
    }

    /// The function named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<RawFn>> {
        self.functions.get(name)
    }

    /// The loader named `name`; every registry has the shared-object loader.
    pub fn loader(&self, name: &str) -> Option<Arc<LoaderFn>> {
        if name == SHARED_LOADER {
            return Some(Arc::new(|_: &TaskContext, params: Option<&str>| {
                decode_shared(params).map(|b| Arc::new(SharedValue::new(b)) as Object)
            }));
        }
        self.loaders.get(name).cloned()
    }

    /// All function and loader names, sorted (the shared-object loader every registry has
    /// included): what a worker announces, so that it is given only tasks it can run.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .functions
            .keys()
            .chain(self.loaders.keys())
            .cloned()
            .chain(std::iter::once(SHARED_LOADER.to_owned()))
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Add;
    impl TaskFn for Add {
        const NAME: &'static str = "add";
        type Params = f64;
        type Inputs = (f64, Raw);
        type Output = f64;
    }

    fn ctx() -> TaskContext {
        TaskContext::standalone("k")
    }

    #[test]
    fn typed_functions_decode_params_and_inputs() {
        let mut r = Registry::new();
        r.register::<Add>(|_, p, (x, raw)| Ok(p + x + raw.0.len() as f64));
        let f = r.get("add").unwrap();
        let x = Bytes::from(encode_output(&2.0f64).unwrap());
        let out = f(
            &ctx(),
            Some("1.5"),
            &[x.clone(), Bytes::from_static(b"abc")],
        )
        .unwrap();
        assert_eq!(postcard::from_bytes::<f64>(&out).unwrap(), 6.5);
        let err = f(&ctx(), Some("\"x\""), &[x.clone(), Bytes::new()]).unwrap_err();
        assert!(err.starts_with("params do not fit f64"), "{err}");
        let err = f(&ctx(), Some("1"), &[x]).unwrap_err();
        assert_eq!(err, "expected 2 input(s), got 1");
    }
}
