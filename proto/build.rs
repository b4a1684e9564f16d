//! Compiles proto/ferrokv/v1/*.proto with a vendored protoc, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let files = [
        "proto/ferrokv/v1/common.proto",
        "proto/ferrokv/v1/kv.proto",
        "proto/ferrokv/v1/cluster.proto",
        "proto/ferrokv/v1/maintenance.proto",
        "proto/ferrokv/v1/raft.proto",
    ];
    tonic_prost_build::configure()
        .bytes(".ferrokv.v1.RaftMessage.payload")
        .compile_protos(&files, &["proto"])?;
    // Name every file: a directory alone is not always rescanned for changes.
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    Ok(())
}
