//! Typed tensors over wasi-nn's byte buffers. wasi-nn carries every tensor as
//! little-endian bytes plus an element type; these helpers keep the element
//! type in Rust's type system so a handler never packs bytes by hand.

use crate::bindings::wasi::nn::tensor::{Tensor as NnTensor, TensorType};
use crate::error::{Error, Result};

/// A numeric type a tensor can hold.
pub trait Element: Copy + sealed::Sealed {
    /// The wasi-nn element type.
    #[doc(hidden)]
    const TYPE: TensorType;
    /// Reads one element from its little-endian bytes.
    #[doc(hidden)]
    fn from_le(bytes: &[u8]) -> Self;
    /// Appends the little-endian bytes of `self`.
    #[doc(hidden)]
    fn put_le(self, out: &mut Vec<u8>);
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! element {
    ($t:ty, $tag:ident) => {
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const TYPE: TensorType = TensorType::$tag;
            fn from_le(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("chunk of element size"))
            }
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}

element!(f32, Fp32);
element!(f64, Fp64);
element!(u8, U8);
element!(i32, I32);
element!(i64, I64);

/// wasi-nn's element types: what a tensor's bytes hold, each value
/// little-endian. `bool` tensors travel as [`ElementType::U8`] (0 or 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElementType {
    /// IEEE 754 half precision (2 bytes).
    Fp16,
    /// bfloat16 (2 bytes).
    Bf16,
    /// `f32`.
    Fp32,
    /// `f64`.
    Fp64,
    /// `u8` (also `bool`).
    U8,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
}

impl ElementType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            ElementType::U8 => 1,
            ElementType::Fp16 | ElementType::Bf16 => 2,
            ElementType::Fp32 | ElementType::I32 => 4,
            ElementType::Fp64 | ElementType::I64 => 8,
        }
    }

    pub(crate) fn to_nn(self) -> TensorType {
        match self {
            ElementType::Fp16 => TensorType::Fp16,
            ElementType::Bf16 => TensorType::Bf16,
            ElementType::Fp32 => TensorType::Fp32,
            ElementType::Fp64 => TensorType::Fp64,
            ElementType::U8 => TensorType::U8,
            ElementType::I32 => TensorType::I32,
            ElementType::I64 => TensorType::I64,
        }
    }

    pub(crate) fn from_nn(ty: TensorType) -> Self {
        match ty {
            TensorType::Fp16 => ElementType::Fp16,
            TensorType::Bf16 => ElementType::Bf16,
            TensorType::Fp32 => ElementType::Fp32,
            TensorType::Fp64 => ElementType::Fp64,
            TensorType::U8 => ElementType::U8,
            TensorType::I32 => ElementType::I32,
            TensorType::I64 => ElementType::I64,
        }
    }
}

/// A tensor as wasi-nn carries it: element type, shape and the row-major
/// little-endian bytes of its values. For element types Rust has no
/// primitive for (`fp16`, `bf16`) or code that handles any type alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTensor {
    /// What the bytes hold.
    pub ty: ElementType,
    /// Dimensions, outermost first.
    pub shape: Vec<u32>,
    /// `shape`'s element count times `ty`'s size bytes.
    pub bytes: Vec<u8>,
}

/// An input tensor, ready to pass to [`crate::Model::run`].
#[derive(Debug)]
pub struct Tensor(pub(crate) NnTensor);

impl Tensor {
    /// A tensor of the given shape (outermost dimension first) from
    /// row-major data; the data length must match the shape.
    pub fn new<T: Element>(shape: &[u32], data: &[T]) -> Result<Self> {
        let expected: u64 = shape.iter().map(|&d| u64::from(d)).product();
        if expected != data.len() as u64 {
            return Err(Error::bad_input(format!(
                "tensor of shape {shape:?} needs {expected} values, got {}",
                data.len()
            )));
        }
        Ok(Tensor(NnTensor::new(shape, T::TYPE, &le_bytes(data))))
    }

    /// A tensor of the given shape from the little-endian bytes of its
    /// row-major values; the byte count must match the shape and type.
    pub fn from_bytes(shape: &[u32], ty: ElementType, bytes: &[u8]) -> Result<Self> {
        let expected = shape.iter().try_fold(ty.size() as u64, |n, &d| n.checked_mul(u64::from(d)));
        if expected != Some(bytes.len() as u64) {
            return Err(Error::bad_input(format!(
                "tensor of shape {shape:?} and type {ty:?} needs {} bytes, got {}",
                expected.map_or_else(|| "more than 2^64".to_owned(), |n| n.to_string()),
                bytes.len()
            )));
        }
        Ok(Tensor(NnTensor::new(shape, ty.to_nn(), bytes)))
    }
}

/// The little-endian bytes of `data`. On a little-endian target (wasm32 is
/// one) those are the values' own bytes, so none are copied: packing them
/// one by one took ~0.4 s per 100 MB.
fn le_bytes<T: Element>(data: &[T]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        // SAFETY: `Element` is sealed to primitive numbers, which have no
        // padding, so every byte of the slice is initialized; the new slice
        // covers exactly those bytes, lives as long as `data`, and `u8` has
        // no alignment requirement.
        let bytes = unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) };
        std::borrow::Cow::Borrowed(bytes)
    } else {
        let mut bytes = Vec::with_capacity(std::mem::size_of_val(data));
        for &x in data {
            x.put_le(&mut bytes);
        }
        std::borrow::Cow::Owned(bytes)
    }
}

/// An output tensor read back as Rust values.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorData<T> {
    /// Dimensions, outermost first.
    pub shape: Vec<u32>,
    /// Row-major values.
    pub data: Vec<T>,
}

impl<T: Element> TensorData<T> {
    pub(crate) fn read(name: &str, tensor: &NnTensor) -> Result<Self> {
        let ty = tensor.ty();
        if ty != T::TYPE {
            return Err(Error::failed(format!("output `{name}` holds {ty:?}, not {:?}", T::TYPE)));
        }
        let bytes = tensor.data();
        let size = std::mem::size_of::<T>();
        Ok(TensorData { shape: tensor.dimensions(), data: bytes.chunks_exact(size).map(T::from_le).collect() })
    }

    /// The rows of a rank-2 tensor (`[rows, columns]`), or the whole tensor
    /// as one row for any other rank.
    pub fn rows(&self) -> std::slice::Chunks<'_, T> {
        let width = match self.shape.as_slice() {
            [_, columns] => (*columns as usize).max(1),
            _ => self.data.len().max(1),
        };
        self.data.chunks(width)
    }
}

impl RawTensor {
    pub(crate) fn read(tensor: &NnTensor) -> Self {
        RawTensor { ty: ElementType::from_nn(tensor.ty()), shape: tensor.dimensions(), bytes: tensor.data() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_types_round_trip_through_wasi_nn() {
        use ElementType::*;
        for ty in [Fp16, Bf16, Fp32, Fp64, U8, I32, I64] {
            assert_eq!(ElementType::from_nn(ty.to_nn()), ty);
        }
        assert_eq!((Fp16.size(), U8.size(), I64.size()), (2, 1, 8));
    }

    #[test]
    fn le_bytes_are_each_value_little_endian() {
        let floats = [1.5f32, -0.0, f32::MAX];
        let packed: Vec<u8> = floats.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(le_bytes(&floats).as_ref(), packed.as_slice());
        let ints = [i64::MIN, 7];
        let packed: Vec<u8> = ints.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(le_bytes(&ints).as_ref(), packed.as_slice());
        assert!(le_bytes::<u8>(&[]).is_empty());
    }
}
