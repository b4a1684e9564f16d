//! The `ferrokv` binary: one replica, or `ferrokv local-cluster`.

fn main() -> anyhow::Result<()> {
    ferrokv_node::cli::main()
}
