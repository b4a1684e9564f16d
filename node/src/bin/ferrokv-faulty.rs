//! `ferrokv-faulty`: ferrokv built with the `fault-injection` feature, for jepsen-lite and
//! tests that must see a broken guarantee caught. Never shipped in images.

fn main() -> anyhow::Result<()> {
    ferrokv_node::cli::main()
}
