//! The wire formats: codecs round-trip, decoders refuse malformed input without panicking, frame
//! caps hold. One test binary, one module per area.

mod catalog_codec;
mod codec_props;
mod decoders_props;
mod frames_props;
