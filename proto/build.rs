//! Generates the covenant.v1 messages and services with protox (a pure-Rust
//! protobuf compiler) feeding tonic's code generator, so no `protoc` is
//! needed, and writes the encoded descriptor set for gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/covenant/v1/covenant.proto"];
    // `compile_fds` does not know the .proto paths, so we say them ourselves.
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("covenant_descriptor.bin"), prost::Message::encode_to_vec(&descriptors))?;
    // Our codec: a request that is not valid protobuf is InvalidArgument,
    // not tonic-prost's Internal (`src/codec.rs`).
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::StrictCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
