//! The registry of task functions a worker can run.
//!
//! Typed functions take serde params (from the graph's JSON), inputs decoded from their
//! producers' outputs with postcard, and return a serde output encoded with postcard. A [`Raw`]
//! input is the producer's bytes as they are, so typed functions can consume built-ins' plain
//! bytes. Raw functions see bytes in and return bytes out.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::Arc;

use bytes::Bytes;
use drover_graph::TaskFn;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// What a running task can see of its worker.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// The task's key.
    pub key: String,
    /// The worker's id in the scheduler.
    pub worker_id: u32,
    /// The worker's name.
    pub worker_name: String,
    /// When the task's timeout expires, if it has one: long-running functions should stop by
    /// then (the worker reports the task failed at that moment either way).
    pub deadline: Option<std::time::Instant>,
    /// The task's timeout, if any (`deadline` is its start plus this).
    pub timeout: Option<std::time::Duration>,
}

/// A function body: params JSON (or none), input bytes in order → output bytes or an error.
pub type RawFn =
    dyn Fn(&TaskContext, Option<&str>, &[Bytes]) -> Result<Vec<u8>, String> + Send + Sync;

/// Named task functions.
#[derive(Clone, Default)]
pub struct Registry {
    functions: BTreeMap<String, Arc<RawFn>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.functions.keys()).finish()
    }
}

/// The bytes of an input exactly as produced (no decoding): use it in a typed function's
/// `Inputs` to take a raw function's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raw(pub Bytes);

/// Decodes one input.
pub trait DecodeInput: Sized {
    /// Decodes `bytes`.
    fn decode_input(bytes: &Bytes) -> Result<Self, String>;
}

impl<T: DeserializeOwned> DecodeInput for T {
    fn decode_input(bytes: &Bytes) -> Result<Self, String> {
        postcard::from_bytes(bytes)
            .map_err(|e| format!("cannot decode input as {}: {e}", std::any::type_name::<T>()))
    }
}

impl DecodeInput for Raw {
    fn decode_input(bytes: &Bytes) -> Result<Self, String> {
        Ok(Raw(bytes.clone()))
    }
}

/// Decodes a whole input list into a typed function's `Inputs`.
pub trait DecodeInputs: Sized {
    /// Decodes `inputs`, checking their number.
    fn decode_inputs(inputs: &[Bytes]) -> Result<Self, String>;
}

impl DecodeInputs for () {
    fn decode_inputs(inputs: &[Bytes]) -> Result<Self, String> {
        expect_count(inputs, 0)
    }
}

impl<T: DecodeInput> DecodeInputs for Vec<T> {
    fn decode_inputs(inputs: &[Bytes]) -> Result<Self, String> {
        inputs.iter().map(T::decode_input).collect()
    }
}

fn expect_count(inputs: &[Bytes], n: usize) -> Result<(), String> {
    if inputs.len() == n {
        Ok(())
    } else {
        Err(format!("expected {n} input(s), got {}", inputs.len()))
    }
}

macro_rules! tuple_inputs {
    ($n:expr; $($t:ident $i:tt),+) => {
        impl<$($t: DecodeInput),+> DecodeInputs for ($($t,)+) {
            fn decode_inputs(inputs: &[Bytes]) -> Result<Self, String> {
                expect_count(inputs, $n)?;
                Ok(($($t::decode_input(&inputs[$i])?,)+))
            }
        }
    };
}
tuple_inputs!(1; A 0);
tuple_inputs!(2; A 0, B 1);
tuple_inputs!(3; A 0, B 1, C 2);
tuple_inputs!(4; A 0, B 1, C 2, D 3);
tuple_inputs!(5; A 0, B 1, C 2, D 3, E 4);
tuple_inputs!(6; A 0, B 1, C 2, D 3, E 4, F 5);

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

    /// Registers the body of the typed function `F`.
    pub fn register<F, E>(
        &mut self,
        f: impl Fn(&TaskContext, F::Params, F::Inputs) -> Result<F::Output, E> + Send + Sync + 'static,
    ) -> &mut Registry
    where
        F: TaskFn,
        F::Params: DeserializeOwned,
        F::Inputs: DecodeInputs,
        F::Output: Serialize,
        E: Display,
    {
        self.register_raw(F::NAME, move |ctx, params, inputs| {
            let params = parse_params::<F::Params>(params)?;
            let inputs = F::Inputs::decode_inputs(inputs)?;
            let out = f(ctx, params, inputs).map_err(|e| e.to_string())?;
            encode_output(&out)
        })
    }

    /// The function named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<RawFn>> {
        self.functions.get(name)
    }

    /// All names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.functions.keys().cloned().collect()
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
        TaskContext {
            key: "k".into(),
            worker_id: 0,
            worker_name: "w".into(),
            deadline: None,
            timeout: None,
        }
    }

    #[test]
    fn typed_functions_decode_params_and_inputs() {
        let mut r = Registry::new();
        r.register::<Add, String>(|_, p, (x, raw)| Ok(p + x + raw.0.len() as f64));
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
