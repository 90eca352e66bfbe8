//! Tensors as wasi-nn carries them: dimensions, an element type and
//! little-endian bytes. Conversion to and from ONNX Runtime values is a
//! single copy each way and works for every element type without
//! per-type code paths.

use ort::tensor::TensorElementType;

/// The element types wasi-nn can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementType {
    /// IEEE half precision.
    F16,
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
    /// bfloat16.
    BF16,
    /// Unsigned byte.
    U8,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
}

impl ElementType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            ElementType::U8 => 1,
            ElementType::F16 | ElementType::BF16 => 2,
            ElementType::F32 | ElementType::I32 => 4,
            ElementType::F64 | ElementType::I64 => 8,
        }
    }

    pub(crate) fn to_ort(self) -> TensorElementType {
        match self {
            ElementType::F16 => TensorElementType::Float16,
            ElementType::F32 => TensorElementType::Float32,
            ElementType::F64 => TensorElementType::Float64,
            ElementType::BF16 => TensorElementType::Bfloat16,
            ElementType::U8 => TensorElementType::Uint8,
            ElementType::I32 => TensorElementType::Int32,
            ElementType::I64 => TensorElementType::Int64,
        }
    }

    pub(crate) fn from_ort(t: TensorElementType) -> Option<Self> {
        Some(match t {
            TensorElementType::Float16 => ElementType::F16,
            TensorElementType::Float32 => ElementType::F32,
            TensorElementType::Float64 => ElementType::F64,
            TensorElementType::Bfloat16 => ElementType::BF16,
            TensorElementType::Uint8 => ElementType::U8,
            TensorElementType::Int32 => ElementType::I32,
            TensorElementType::Int64 => ElementType::I64,
            _ => return None,
        })
    }
}

/// A dense tensor in wasi-nn's layout.
#[derive(Clone, PartialEq, Eq)]
pub struct Tensor {
    /// Dimensions, outermost first; empty for a scalar.
    pub dims: Vec<u32>,
    /// Element type.
    pub ty: ElementType,
    /// Row-major little-endian element bytes.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?} {:?}, {} bytes)", self.ty, self.dims, self.data.len())
    }
}

impl Tensor {
    /// Elements implied by the dimensions.
    pub fn len(&self) -> u64 {
        self.dims.iter().map(|&d| u64::from(d)).product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The byte length the dimensions and type call for.
    pub fn expected_bytes(&self) -> u64 {
        self.len() * self.ty.size() as u64
    }

    pub(crate) fn to_ort(&self) -> ort::Result<ort::value::DynTensor> {
        let shape: Vec<i64> = self.dims.iter().map(|&d| i64::from(d)).collect();
        let allocator = ort::memory::Allocator::default();
        let mut value = ort::value::DynTensor::new(&allocator, self.ty.to_ort(), shape)?;
        if !self.data.is_empty() {
            // SAFETY: ONNX Runtime allocated exactly `expected_bytes` for this
            // shape and type, and the caller checked `data` has that length.
            unsafe {
                std::ptr::copy_nonoverlapping(self.data.as_ptr(), value.data_ptr_mut().cast::<u8>(), self.data.len());
            }
        }
        Ok(value)
    }

    pub(crate) fn from_ort(value: &ort::value::DynValue) -> Result<Self, String> {
        let ort::value::ValueType::Tensor { ty, shape, .. } = value.dtype() else {
            return Err(format!("output is a {}, not a tensor", value.dtype()));
        };
        let ty = ElementType::from_ort(*ty).ok_or_else(|| format!("element type {ty} has no wasi-nn equivalent"))?;
        let dims = shape
            .iter()
            .map(|&d| u32::try_from(d).map_err(|_| format!("dimension {d} does not fit wasi-nn")))
            .collect::<Result<Vec<u32>, String>>()?;
        let mut tensor = Tensor { dims, ty, data: Vec::new() };
        let bytes = tensor.expected_bytes() as usize;
        if bytes > 0 {
            let tensor_ref = value.downcast_ref::<ort::value::DynTensorValueType>().map_err(|e| e.to_string())?;
            // SAFETY: a CPU tensor of this shape and type holds exactly
            // `bytes` contiguous bytes at its data pointer.
            tensor.data = unsafe { std::slice::from_raw_parts(tensor_ref.data_ptr().cast::<u8>(), bytes) }.to_vec();
        }
        Ok(tensor)
    }
}
