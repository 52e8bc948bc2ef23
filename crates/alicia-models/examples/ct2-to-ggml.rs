//! Converts a CTranslate2 Whisper model directory by hand:
//! `cargo run --release -p alicia-models --example ct2-to-ggml -- MODEL_DIR OUT.bin`
//! (`alicia models fetch` does this itself; this is for other CTranslate2 models.)

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, out] = &args[..] else {
        return Err("usage: ct2-to-ggml MODEL_DIR OUT.bin".into());
    };
    let dir = std::path::Path::new(dir);
    let model = std::fs::read(dir.join("model.bin"))?;
    let tokenizer = std::fs::read(dir.join("tokenizer.json"))?;
    let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
    let summary = alicia_models::ct2ggml::convert(&model, &tokenizer, &mut w, |_| {})?;
    std::io::Write::flush(&mut w)?;
    println!("wrote {out}: {summary:?}");
    Ok(())
}
