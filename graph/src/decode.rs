//! Decoding a typed function's inputs, as a worker hands them over: each input is its
//! producer's bytes (postcard for typed outputs) or, for a once-cell or a shared object, the
//! worker's own object. Lives here, beside [`PerWorker`] and [`Shared`], so that these input
//! types can decode differently from serde types.

use std::any::{Any, TypeId};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::{PerWorker, Shared};

/// A worker's object for a once-cell or shared object: type-erased, shared by reference.
pub type Object = Arc<dyn Any + Send + Sync>;

/// The loader name of shared objects: its params are the value, encoded by [`encode_shared`].
pub const SHARED_LOADER: &str = "drover.shared";

/// One input as a function receives it.
#[derive(Debug, Clone, Copy)]
pub struct InputRef<'a> {
    /// The producer's output bytes (empty for once-cells and shared objects).
    pub bytes: &'a Bytes,
    /// The worker's object, for once-cells and shared objects.
    pub object: Option<&'a Object>,
}

/// Decodes one input into the value a function receives.
pub trait DecodeInput {
    /// What the function receives: `T` for a serde type, `Arc<T>` for [`PerWorker<T>`] and
    /// [`Shared<T>`].
    type Value;
    /// Decodes `input`.
    fn decode_input(input: InputRef<'_>) -> Result<Self::Value, String>;
}

impl<T: DeserializeOwned> DecodeInput for T {
    type Value = T;
    fn decode_input(input: InputRef<'_>) -> Result<T, String> {
        if input.object.is_some() {
            return Err(format!(
                "input is a once-cell or shared object; declare it as PerWorker<..> or Shared<..>, not {}",
                std::any::type_name::<T>()
            ));
        }
        postcard::from_bytes(input.bytes)
            .map_err(|e| format!("cannot decode input as {}: {e}", std::any::type_name::<T>()))
    }
}

impl<T: Send + Sync + 'static> DecodeInput for PerWorker<T> {
    type Value = Arc<T>;
    fn decode_input(input: InputRef<'_>) -> Result<Arc<T>, String> {
        let Some(object) = input.object else {
            return Err(format!(
                "input is not a once-cell, but the function takes PerWorker<{}>",
                std::any::type_name::<T>()
            ));
        };
        object.clone().downcast::<T>().map_err(|_| {
            format!(
                "the once-cell's object is not a {}",
                std::any::type_name::<T>()
            )
        })
    }
}

/// A shared object's bytes on a worker, decoded at most once, on first typed use.
#[derive(Debug)]
pub struct SharedValue {
    bytes: Bytes,
    typed: OnceLock<Result<(TypeId, &'static str, Object), String>>,
}

impl SharedValue {
    /// Wraps the received bytes.
    pub fn new(bytes: Bytes) -> SharedValue {
        SharedValue {
            bytes,
            typed: OnceLock::new(),
        }
    }

    /// The encoded size.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The value as a `T`, decoding it on first use. Asking for another type later is an error.
    pub fn get<T: DeserializeOwned + Send + Sync + 'static>(&self) -> Result<Arc<T>, String> {
        let decoded = self.typed.get_or_init(|| {
            postcard::from_bytes::<T>(&self.bytes)
                .map(|v| {
                    (
                        TypeId::of::<T>(),
                        std::any::type_name::<T>(),
                        Arc::new(v) as Object,
                    )
                })
                .map_err(|e| {
                    format!(
                        "cannot decode the shared object as {}: {e}",
                        std::any::type_name::<T>()
                    )
                })
        });
        match decoded {
            Err(e) => Err(e.clone()),
            Ok((id, name, object)) => {
                if *id != TypeId::of::<T>() {
                    return Err(format!(
                        "the shared object was decoded as {name}, not {}",
                        std::any::type_name::<T>()
                    ));
                }
                Ok(object.clone().downcast::<T>().expect("type checked"))
            }
        }
    }
}

impl<T: DeserializeOwned + Send + Sync + 'static> DecodeInput for Shared<T> {
    type Value = Arc<T>;
    fn decode_input(input: InputRef<'_>) -> Result<Arc<T>, String> {
        let shared = input
            .object
            .and_then(|o| o.downcast_ref::<SharedValue>())
            .ok_or_else(|| {
                format!(
                    "input is not a shared object, but the function takes Shared<{}>",
                    std::any::type_name::<T>()
                )
            })?;
        shared.get::<T>()
    }
}

/// Encodes a shared object's value as its params: the postcard bytes, base64, as a JSON string.
pub fn encode_shared<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, String> {
    use base64::Engine;
    let bytes = postcard::to_stdvec(value).map_err(|e| e.to_string())?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Decodes a shared object's params (see [`encode_shared`]) back to its bytes.
pub fn decode_shared(params: Option<&str>) -> Result<Bytes, String> {
    use base64::Engine;
    let text: String = serde_json::from_str(params.unwrap_or("null"))
        .map_err(|e| format!("shared object params must be a base64 string: {e}"))?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map(Bytes::from)
        .map_err(|e| format!("shared object params are not base64: {e}"))
}

/// Decodes a whole input list into the value a function receives.
pub trait DecodeInputs {
    /// What the function receives: a tuple, a `Vec`, or `()`.
    type Value;
    /// Decodes `inputs` (with `objects`, positional, empty when there are none), checking
    /// their number.
    fn decode_inputs(inputs: &[Bytes], objects: &[Option<Object>]) -> Result<Self::Value, String>;
}

fn input_at<'a>(inputs: &'a [Bytes], objects: &'a [Option<Object>], i: usize) -> InputRef<'a> {
    InputRef {
        bytes: &inputs[i],
        object: objects.get(i).and_then(Option::as_ref),
    }
}

fn expect_count(inputs: &[Bytes], n: usize) -> Result<(), String> {
    if inputs.len() == n {
        Ok(())
    } else {
        Err(format!("expected {n} input(s), got {}", inputs.len()))
    }
}

impl DecodeInputs for () {
    type Value = ();
    fn decode_inputs(inputs: &[Bytes], _: &[Option<Object>]) -> Result<(), String> {
        expect_count(inputs, 0)
    }
}

impl<T: DecodeInput> DecodeInputs for Vec<T> {
    type Value = Vec<T::Value>;
    fn decode_inputs(inputs: &[Bytes], objects: &[Option<Object>]) -> Result<Self::Value, String> {
        (0..inputs.len())
            .map(|i| T::decode_input(input_at(inputs, objects, i)))
            .collect()
    }
}

macro_rules! tuple_inputs {
    ($n:expr; $($t:ident $i:tt),+) => {
        impl<$($t: DecodeInput),+> DecodeInputs for ($($t,)+) {
            type Value = ($($t::Value,)+);
            fn decode_inputs(inputs: &[Bytes], objects: &[Option<Object>]) -> Result<Self::Value, String> {
                expect_count(inputs, $n)?;
                Ok(($($t::decode_input(input_at(inputs, objects, $i))?,)+))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Model(u32);

    #[test]
    fn serde_once_cell_and_shared_inputs_decode_side_by_side() {
        let x = Bytes::from(postcard::to_stdvec(&7u32).unwrap());
        let model: Object = Arc::new(Model(3));
        let shared: Object = Arc::new(SharedValue::new(Bytes::from(
            postcard::to_stdvec(&vec![1u8, 2]).unwrap(),
        )));
        let inputs = [x, Bytes::new(), Bytes::new()];
        let objects = [None, Some(model), Some(shared)];
        let (a, m, s) =
            <(u32, PerWorker<Model>, Shared<Vec<u8>>)>::decode_inputs(&inputs, &objects).unwrap();
        assert_eq!((a, m.0, s.as_slice()), (7, 3, &[1u8, 2][..]));
        // Wrong declarations say what is wrong.
        let e = <(u32, u32, Shared<Vec<u8>>)>::decode_inputs(&inputs, &objects).unwrap_err();
        assert!(e.contains("PerWorker"), "{e}");
        let e = <(u32, PerWorker<String>, Shared<Vec<u8>>)>::decode_inputs(&inputs, &objects)
            .unwrap_err();
        assert!(e.contains("not a alloc::string::String"), "{e}");
        let e = <(PerWorker<Model>, PerWorker<Model>, Shared<Vec<u8>>)>::decode_inputs(
            &inputs, &objects,
        )
        .unwrap_err();
        assert!(e.contains("is not a once-cell"), "{e}");
    }

    #[test]
    fn a_shared_object_decodes_once_and_keeps_its_type() {
        let v = SharedValue::new(Bytes::from(postcard::to_stdvec(&5u64).unwrap()));
        let a = v.get::<u64>().unwrap();
        let b = v.get::<u64>().unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(v.get::<u8>().unwrap_err().contains("decoded as u64"));
        let text = encode_shared(&vec![9u16, 10]).unwrap();
        let json = serde_json::to_string(&text).unwrap();
        let bytes = decode_shared(Some(&json)).unwrap();
        assert_eq!(
            postcard::from_bytes::<Vec<u16>>(&bytes).unwrap(),
            vec![9, 10]
        );
    }
}
