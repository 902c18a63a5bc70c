//! The vpnlb packet path, in pure Rust over byte buffers.
//!
//! Nothing in this crate knows about DPDK: the daemon's I/O layer hands bursts of frames to
//! [`pipeline`], and `vpnlbd replay` hands it frames read from capture files. Both run exactly
//! the same code.
//!
//! No `unsafe` but the two prefetch hints in [`affinity`], allowed where they stand.

#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::cast_possible_truncation))]

// So that `dataplane::...` paths name this crate from inside it too: the test kit's source
// (`testkit/src/lib.rs`) is compiled into the unit tests below, where its builders must make
// this compilation's types (a dev-dependency on `vpnlb-testkit` would bring a second, distinct
// copy of the crate).
#[cfg(test)]
extern crate self as dataplane;

/// An enum of reasons something is counted under a name: each variant with its counter name
/// and a doc line. Gives `ALL` (declaration order, which is also the `as usize` index),
/// `COUNT` and `name()`. Drop reasons, redirect fallbacks and load-report refusals use it.
#[macro_export]
macro_rules! named_reasons {
    ($(#[$meta:meta])* $vis:vis enum $name:ident {
        $($variant:ident => $label:literal, $doc:literal;)*
    }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        $vis enum $name {
            $(#[doc = $doc] $variant,)*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            pub const COUNT: usize = $name::ALL.len();

            /// The counter's name (`vpnlbctl`, the metrics, replay's output).
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)*
                }
            }
        }
    };
}

pub mod affinity;
pub mod changes;
pub mod classify;
pub mod counters;
pub mod emit;
pub mod exception;
pub mod fragment;
pub mod frame;
pub mod hold;
pub mod io;
pub mod model;
pub mod nat;
pub mod neighbor;
pub mod pipeline;
pub mod protocols;
pub mod redirect;
pub mod rng;
pub mod schedule;
pub mod steer;
pub mod wire;

/// `vpnlb-testkit`, compiled as a module of this crate for its own unit tests only (see the
/// `extern crate self` above); the shipped crate has no test builders or lab constants.
#[cfg(test)]
#[doc(hidden)]
#[path = "../../testkit/src/lib.rs"]
pub mod testkit;
