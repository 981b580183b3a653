//! Compiles the `.proto` files with protox (a pure-Rust protobuf compiler, so
//! no `protoc` has to be installed) and generates the Rust types with
//! tonic-prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/meridian/v1/crdt.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure().bytes(".").compile_fds(descriptors)?;
    Ok(())
}
