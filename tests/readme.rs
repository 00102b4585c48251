//! The README's Rust blocks are regions of `examples/readme.rs`, which this test runs: the
//! README shows whole code (no hidden lines) and cannot drift from code that compiles and runs.

#[path = "../examples/readme.rs"]
mod readme;

mod common;

const README: &str = include_str!("../README.md");
const EXAMPLES: &str = include_str!("../examples/readme.rs");

/// The README's fenced blocks whose info string starts with `rust`, without the indentation of
/// their fence (a block inside a list item).
fn rust_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for line in markdown.lines() {
        let indent = line.len() - line.trim_start().len();
        match &mut current {
            None if line.trim_start().starts_with("```rust") => current = Some((indent, String::new())),
            Some((_, block)) if line.trim_start().starts_with("```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some((fence, block)) => {
                block.push_str(line.get(*fence..).unwrap_or(""));
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// The regions of `examples/readme.rs`, by name, without their common indentation.
fn regions(source: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in source.lines() {
        let marker = line.trim_start().strip_prefix("// README: ");
        match (marker, &mut current) {
            (Some("end"), Some((name, lines))) => {
                let indent = lines
                    .iter()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| l.len() - l.trim_start().len())
                    .min()
                    .unwrap_or(0);
                let text: String = lines.iter().map(|l| format!("{}\n", l.get(indent..).unwrap_or(""))).collect();
                out.push((name.clone(), text));
                current = None;
            }
            (Some(name), None) => current = Some((name.to_string(), Vec::new())),
            (_, Some((_, lines))) => lines.push(line),
            (_, None) => {}
        }
    }
    out
}

#[test]
fn every_rust_block_of_the_readme_is_a_region_of_the_examples_file() {
    let blocks = rust_blocks(README);
    let regions = regions(EXAMPLES);
    assert!(blocks.len() >= 5, "the README has {} Rust blocks", blocks.len());
    for block in &blocks {
        assert!(!block.lines().any(|l| l.trim_start().starts_with("# ")), "a README block has hidden lines:\n{block}");
        assert!(
            regions.iter().any(|(_, text)| text == block),
            "this README block is not a region of examples/readme.rs:\n{block}"
        );
    }
    for (name, text) in &regions {
        assert!(blocks.contains(text), "region {name} of examples/readme.rs is not in the README");
    }
}

#[test]
fn the_readme_examples_run() -> anyhow::Result<()> {
    let (_ledger, url) = common::ledger("readme_examples")?;
    readme::quickstart(&url).map_err(|e| anyhow::anyhow!("{e}"))?;
    readme::own_transaction(&url).map_err(|e| anyhow::anyhow!("{e}"))?;
    readme::own_pool(&url).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (_ledger, url) = common::ledger("readme_batches")?;
    readme::batches(&url).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (_ledger, url) = common::ledger("readme_change_feed")?;
    readme::change_feed(&url).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (_ledger, url) = common::ledger("readme_async_door")?;
    readme::async_door(&url).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
