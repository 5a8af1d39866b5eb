//! Typed task functions: declare a function's name, params, input and output types once, and
//! [`Graph::call`](crate::Graph::call) checks the wiring at compile time.
//!
//! ```
//! use drover_graph::{Graph, TaskFn};
//!
//! struct Mean;
//! impl TaskFn for Mean {
//!     const NAME: &'static str = "mean";
//!     type Params = ();
//!     type Inputs = (Vec<f64>,);
//!     type Output = f64;
//! }
//! struct Subtract;
//! impl TaskFn for Subtract {
//!     const NAME: &'static str = "subtract";
//!     type Params = ();
//!     type Inputs = (Vec<f64>, f64);
//!     type Output = Vec<f64>;
//! }
//! let mut g = Graph::new();
//! let b = g.task("load", &()).add().typed::<Vec<f64>>();
//! let m = g.call::<Mean, _>(&(), b).add();
//! let d = g.call::<Subtract, _>(&(), (b, m)).add();
//! // g.call::<Subtract, _>(&(), (m, b)) would not compile: the types are swapped.
//! # let _ = d;
//! ```

use serde::Serialize;

use crate::{Handle, TaskId};

/// A task function's signature, known to the graph builder (the worker registers the body).
pub trait TaskFn {
    /// The name the function is registered under on workers.
    const NAME: &'static str;
    /// Its parameters, serialised to JSON in the graph.
    type Params: Serialize;
    /// The output types of its inputs: a tuple (`(T,)` for a single input), a `Vec<T>` for any
    /// number of inputs of type `T`, `()` for none. A single [`Handle`] passes as `(T,)`.
    type Inputs;
    /// Its output type.
    type Output;
}

/// Handles whose output types form `Types`: a [`Handle`] (as a 1-tuple), a tuple of handles,
/// or a `Vec`.
pub trait HandleList {
    /// The output types, matched against [`TaskFn::Inputs`].
    type Types;
    /// Calls `f` with each handle's task id and graph id, in order.
    fn for_each_id(&self, f: &mut dyn FnMut(TaskId, u64));
}

impl HandleList for () {
    type Types = ();
    fn for_each_id(&self, _: &mut dyn FnMut(TaskId, u64)) {}
}

impl<T> HandleList for Vec<Handle<T>> {
    type Types = Vec<T>;
    fn for_each_id(&self, f: &mut dyn FnMut(TaskId, u64)) {
        for h in self {
            h.for_each_id(f);
        }
    }
}

macro_rules! tuple_list {
    ($($h:ident $t:ident),+) => {
        impl<$($t),+> HandleList for ($(Handle<$t>,)+) {
            type Types = ($($t,)+);
            #[allow(non_snake_case)]
            fn for_each_id(&self, f: &mut dyn FnMut(TaskId, u64)) {
                let ($($h,)+) = self;
                $($h.for_each_id(f);)+
            }
        }
    };
}
tuple_list!(h1 T1);
tuple_list!(h1 T1, h2 T2);
tuple_list!(h1 T1, h2 T2, h3 T3);
tuple_list!(h1 T1, h2 T2, h3 T3, h4 T4);
tuple_list!(h1 T1, h2 T2, h3 T3, h4 T4, h5 T5);
tuple_list!(h1 T1, h2 T2, h3 T3, h4 T4, h5 T5, h6 T6);

/// A once-cell loader's signature, known to the graph builder (the worker registers the body
/// with `Registry::register_loader`). Tasks that take the cell declare [`PerWorker<Object>`] in
/// their `Inputs` and receive an `Arc<Object>`.
pub trait Loader {
    /// The name the loader is registered under on workers.
    const NAME: &'static str;
    /// Its parameters, serialised to JSON in the graph.
    type Params: Serialize;
    /// The object it makes: never serialised, never moved between processes.
    type Object: Send + Sync + 'static;
}

/// The input type of a once-cell made by a [`Loader`] with object `T`: a task function listing
/// `PerWorker<T>` in its `Inputs` receives an `Arc<T>`, the one object of its worker process.
pub struct PerWorker<T: ?Sized>(std::marker::PhantomData<fn() -> Box<T>>);

/// The input type of a shared object of type `T` (see
/// [`Graph::share`](crate::Graph::share)): a task function listing `Shared<T>` in its `Inputs`
/// receives an `Arc<T>`, decoded once per worker process.
pub struct Shared<T: ?Sized>(std::marker::PhantomData<fn() -> Box<T>>);

impl<T: ?Sized> std::fmt::Debug for PerWorker<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PerWorker<{}>", std::any::type_name::<T>())
    }
}

impl<T: ?Sized> std::fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shared<{}>", std::any::type_name::<T>())
    }
}
