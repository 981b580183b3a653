//! Compiles the `.proto` files with protox (a pure-Rust protobuf compiler, so
//! no `protoc` has to be installed) and generates the Rust types with
//! tonic-prost-build: messages, and for services the client and server stubs
//! without tonic's transport (the crate that serves or dials brings it).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/meridian/v1/crdt.proto",
        "proto/meridian/v1/cluster.proto",
        "proto/meridian/v1/sync.proto",
        "proto/meridian/v1/replica.proto",
        "proto/meridian/v1/monitor.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    // Service stubs without tonic's transport helpers (`connect`): the crate
    // that serves or dials brings the transport, so this one stays lean.
    tonic_prost_build::configure().bytes(".").build_transport(false).compile_fds(descriptors)?;
    Ok(())
}
