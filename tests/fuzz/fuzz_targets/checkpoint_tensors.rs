//! A checkpoint's safetensors files (weights, optimizer state) as the loader decodes them:
//! header and data are never trusted; accepted tensors have byte lengths that match their
//! shapes, read as their element type, and encode back to a buffer that decodes to the same
//! tensors.
#![no_main]
use flotilla_fuzz::checkpoint::{decode_tensors, encode_tensors, DType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(tensors) = decode_tensors("model.safetensors", data) else {
        return;
    };
    for t in tensors.values() {
        let n: usize = t.shape().iter().product();
        assert_eq!(t.bytes().len(), n * t.dtype().size());
        assert_eq!(t.len(), n);
        match t.dtype() {
            DType::F32 | DType::F16 | DType::BF16 => {
                assert_eq!(t.to_f32().map(|v| v.len()).ok(), Some(n))
            }
            DType::I8 => assert_eq!(t.to_i8().map(|v| v.len()).ok(), Some(n)),
            DType::I32 => assert_eq!(t.to_i32().map(|v| v.len()).ok(), Some(n)),
        }
    }
    let bytes = encode_tensors(&tensors).expect("decoded tensors encode");
    let back = decode_tensors("model.safetensors", &bytes).expect("encoded tensors decode");
    assert_eq!(back, tensors);
});
