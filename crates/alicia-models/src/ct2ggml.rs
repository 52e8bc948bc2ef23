//! CTranslate2 Whisper model (`model.bin` + `tokenizer.json`, what faster-whisper loads) to
//! whisper.cpp's ggml file (f16).
//!
//! Hand-written because nothing else does this without Python: whisper.cpp's converters read
//! PyTorch or Hugging Face checkpoints (torch, transformers), and no crate reads CTranslate2's
//! format (the `ct2rs` bindings link the C++ engine and load models, they do not export them).
//! Both formats are simple: CTranslate2's is a list of named tensors, ggml's a header, the mel
//! filter bank, the vocabulary and a list of named tensors. The mapping is what this module is:
//! rename tensors, split CTranslate2's fused attention matrices (q|k|v, and k|v for cross
//! attention), compute the 80-bin Slaney mel filter bank (librosa's, which OpenAI's Whisper
//! ships), and take the byte-level vocabulary from `tokenizer.json`.
//!
//! Only float models (f32, f16, bf16) convert; quantized (int8) CTranslate2 models are refused.

use std::collections::HashMap;
use std::io::Write;

/// A conversion failure (the input is not a CTranslate2 Whisper model we understand).
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("model.bin: {0}")]
    Model(String),
    #[error("tokenizer.json: {0}")]
    Tokenizer(String),
    #[error("writing the ggml file: {0}")]
    Write(#[from] std::io::Error),
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgmlSummary {
    pub n_vocab: usize,
    pub n_state: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub tensors: usize,
}

struct Var<'a> {
    shape: Vec<usize>,
    dtype: u8,
    data: &'a [u8],
}

/// Reads CTranslate2's `model.bin` (spec version 6: `WhisperSpec`).
struct Ct2<'a> {
    vars: HashMap<String, Var<'a>>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    off: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ConvertError> {
        let end = self.off.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or_else(|| ConvertError::Model(format!("truncated at byte {}", self.off)))?;
        let s = &self.buf[self.off..end];
        self.off = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, ConvertError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ConvertError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, ConvertError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A string: u16 length including the terminating NUL, then the bytes.
    fn string(&mut self) -> Result<String, ConvertError> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        let text = b.strip_suffix(&[0]).unwrap_or(b);
        String::from_utf8(text.to_vec()).map_err(|_| ConvertError::Model("a name is not UTF-8".into()))
    }
}

impl<'a> Ct2<'a> {
    fn parse(buf: &'a [u8]) -> Result<Self, ConvertError> {
        let mut c = Cursor { buf, off: 0 };
        let version = c.u32()?;
        if version != 6 {
            return Err(ConvertError::Model(format!("format version {version} (only 6 is supported)")));
        }
        let spec = c.string()?;
        if spec != "WhisperSpec" {
            return Err(ConvertError::Model(format!("a {spec}, not a Whisper model")));
        }
        let _revision = c.u32()?;
        let n = c.u32()? as usize;
        let mut vars = HashMap::with_capacity(n);
        for _ in 0..n {
            let name = c.string()?;
            let rank = c.u8()? as usize;
            let mut shape = Vec::with_capacity(rank);
            for _ in 0..rank {
                shape.push(c.u32()? as usize);
            }
            let dtype = c.u8()?;
            let nbytes = c.u32()? as usize;
            let data = c.take(nbytes)?;
            vars.insert(name, Var { shape, dtype, data });
        }
        Ok(Ct2 { vars })
    }

    fn var(&self, name: &str) -> Result<&Var<'a>, ConvertError> {
        self.vars.get(name).ok_or_else(|| ConvertError::Model(format!("no tensor `{name}`")))
    }

    fn f32s(&self, name: &str) -> Result<Vec<f32>, ConvertError> {
        let v = self.var(name)?;
        let count: usize = v.shape.iter().product();
        let width = match v.dtype {
            0 => 4,
            4 | 5 => 2,
            1 => return Err(ConvertError::Model(format!("`{name}` is int8: quantized models are not supported"))),
            d => return Err(ConvertError::Model(format!("`{name}` has data type {d}, not a float"))),
        };
        if v.data.len() != count * width {
            return Err(ConvertError::Model(format!("`{name}`: {} bytes for {count} values", v.data.len())));
        }
        Ok(match v.dtype {
            0 => v.data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            4 => v.data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            _ => v.data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        })
    }

    fn int(&self, name: &str) -> Result<usize, ConvertError> {
        let v = self.var(name)?;
        let value = match (v.dtype, v.data) {
            (1, [a, ..]) => *a as i8 as i64,
            (2, [a, b, ..]) => i16::from_le_bytes([*a, *b]) as i64,
            (3, [a, b, c, d, ..]) => i32::from_le_bytes([*a, *b, *c, *d]) as i64,
            _ => return Err(ConvertError::Model(format!("`{name}` is not an integer"))),
        };
        usize::try_from(value).map_err(|_| ConvertError::Model(format!("`{name}` = {value}")))
    }

    fn dim(&self, name: &str, axis: usize) -> Result<usize, ConvertError> {
        self.var(name)?
            .shape
            .get(axis)
            .copied()
            .ok_or_else(|| ConvertError::Model(format!("`{name}` has no axis {axis}")))
    }

    fn layers(&self, prefix: &str) -> usize {
        let mut seen = std::collections::HashSet::new();
        for name in self.vars.keys() {
            if let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix("/layer_")) {
                if let Some((n, _)) = rest.split_once('/') {
                    if n.bytes().all(|b| b.is_ascii_digit()) {
                        seen.insert(n.to_string());
                    }
                }
            }
        }
        seen.len()
    }
}

/// One output tensor: where its values come from in the CTranslate2 model.
struct Plan {
    name: String,
    src: String,
    /// Rows `part` of `parts` equal slices along the first axis (the fused matrices).
    part: Option<(usize, usize)>,
    /// A different shape for the same values (conv biases become `[n, 1]`).
    shape: Option<Vec<usize>>,
}

fn plan(name: impl Into<String>, src: impl Into<String>) -> Plan {
    Plan { name: name.into(), src: src.into(), part: None, shape: None }
}

fn part(name: impl Into<String>, src: impl Into<String>, part: usize, parts: usize) -> Plan {
    Plan { name: name.into(), src: src.into(), part: Some((part, parts)), shape: None }
}

fn block(out: &mut Vec<Plan>, pfx: &str, src: &str, cross: bool) {
    let ln = |out: &mut Vec<Plan>, dst: &str, s: &str| {
        out.push(plan(format!("{pfx}.{dst}.weight"), format!("{src}/{s}/gamma")));
        out.push(plan(format!("{pfx}.{dst}.bias"), format!("{src}/{s}/beta")));
    };
    let lin = |out: &mut Vec<Plan>, dst: &str, s: &str| {
        out.push(plan(format!("{pfx}.{dst}.weight"), format!("{src}/{s}/weight")));
        out.push(plan(format!("{pfx}.{dst}.bias"), format!("{src}/{s}/bias")));
    };
    ln(out, "attn_ln", "self_attention/layer_norm");
    let (w, b) = (format!("{src}/self_attention/linear_0/weight"), format!("{src}/self_attention/linear_0/bias"));
    out.push(part(format!("{pfx}.attn.query.weight"), &w, 0, 3));
    out.push(part(format!("{pfx}.attn.query.bias"), &b, 0, 3));
    // whisper.cpp's key projection has no bias (it is zero in Whisper; checked below).
    out.push(part(format!("{pfx}.attn.key.weight"), &w, 1, 3));
    out.push(part(format!("{pfx}.attn.value.weight"), &w, 2, 3));
    out.push(part(format!("{pfx}.attn.value.bias"), &b, 2, 3));
    lin(out, "attn.out", "self_attention/linear_1");
    if cross {
        ln(out, "cross_attn_ln", "attention/layer_norm");
        lin(out, "cross_attn.query", "attention/linear_0");
        let (w, b) = (format!("{src}/attention/linear_1/weight"), format!("{src}/attention/linear_1/bias"));
        out.push(part(format!("{pfx}.cross_attn.key.weight"), &w, 0, 2));
        out.push(part(format!("{pfx}.cross_attn.value.weight"), &w, 1, 2));
        out.push(part(format!("{pfx}.cross_attn.value.bias"), &b, 1, 2));
        lin(out, "cross_attn.out", "attention/linear_2");
    }
    ln(out, "mlp_ln", "ffn/layer_norm");
    lin(out, "mlp.0", "ffn/linear_0");
    lin(out, "mlp.2", "ffn/linear_1");
}

/// The byte each character of GPT-2's byte-level alphabet stands for.
fn unicode_to_byte() -> HashMap<char, u8> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter().zip(cs).filter_map(|(b, c)| Some((char::from_u32(c)?, b as u8))).collect()
}

/// Byte strings of the first `n` tokens (the ranks; special tokens follow in whisper.cpp).
fn vocabulary(tokenizer_json: &[u8], n: usize) -> Result<Vec<Vec<u8>>, ConvertError> {
    let tok: serde_json::Value =
        serde_json::from_slice(tokenizer_json).map_err(|e| ConvertError::Tokenizer(e.to_string()))?;
    let vocab = tok
        .pointer("/model/vocab")
        .and_then(|v| v.as_object())
        .ok_or_else(|| ConvertError::Tokenizer("no model.vocab".into()))?;
    let mut by_id: Vec<Option<&str>> = vec![None; n];
    for (text, id) in vocab {
        if let Some(slot) = id.as_u64().and_then(|i| by_id.get_mut(i as usize)) {
            *slot = Some(text);
        }
    }
    let dec = unicode_to_byte();
    by_id
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let t = t.ok_or_else(|| ConvertError::Tokenizer(format!("no token with id {i}")))?;
            t.chars()
                .map(|c| dec.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| ConvertError::Tokenizer(format!("token {i} is not byte-level")))
        })
        .collect()
}

const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;

fn logstep() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel(f: f64) -> f64 {
    if f >= MIN_LOG_HZ {
        MIN_LOG_HZ / F_SP + (f.max(1e-10) / MIN_LOG_HZ).ln() / logstep()
    } else {
        f / F_SP
    }
}

fn mel_to_hz(m: f64) -> f64 {
    if m >= MIN_LOG_HZ / F_SP {
        MIN_LOG_HZ * (logstep() * (m - MIN_LOG_HZ / F_SP)).exp()
    } else {
        F_SP * m
    }
}

/// librosa's `filters.mel(sr=16000, n_fft=400, n_mels)` (Slaney scale and normalisation), the
/// filter bank OpenAI's Whisper computes its log-mel input with. Row-major `[n_mels][201]`.
pub fn mel_filters(n_mels: usize) -> Vec<f32> {
    let (sr, n_fft) = (16000.0f64, 400usize);
    let n_freqs = n_fft / 2 + 1;
    // numpy.fft.rfftfreq and numpy.linspace, step by step, so the values round the same way.
    let val = 1.0 / (n_fft as f64 * (1.0 / sr));
    let fft: Vec<f64> = (0..n_freqs).map(|k| k as f64 * val).collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(sr / 2.0));
    let num = n_mels + 2;
    let step = (hi - lo) / (num - 1) as f64;
    let mel_f: Vec<f64> =
        (0..num).map(|i| if i == num - 1 { hi } else { i as f64 * step + lo }).map(mel_to_hz).collect();
    let fdiff: Vec<f64> = mel_f.windows(2).map(|w| w[1] - w[0]).collect();
    let mut out = Vec::with_capacity(n_mels * n_freqs);
    for i in 0..n_mels {
        let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
        for f in &fft {
            let lower = -(mel_f[i] - f) / fdiff[i];
            let upper = (mel_f[i + 2] - f) / fdiff[i + 1];
            // numpy's maximum(0, -0.0) keeps -0.0 (f64::max would not): written the same way,
            // the file is byte-identical to what the Python converter writes.
            let m = lower.min(upper);
            out.push((if m < 0.0 { 0.0 } else { m } * enorm) as f32);
        }
    }
    out
}

/// Converts; `written` is told how many bytes went out after each tensor (for progress).
pub fn convert(
    model_bin: &[u8],
    tokenizer_json: &[u8],
    out: &mut impl Write,
    mut written: impl FnMut(u64),
) -> Result<GgmlSummary, ConvertError> {
    let m = Ct2::parse(model_bin)?;
    let enc_layers = m.layers("encoder");
    let dec_layers = m.layers("decoder");
    if enc_layers == 0 || dec_layers == 0 {
        return Err(ConvertError::Model("no encoder or decoder layers".into()));
    }
    let n_vocab = m.dim("decoder/embeddings/weight", 0)?;
    let n_state = m.dim("decoder/embeddings/weight", 1)?;
    let n_audio_ctx = m.dim("encoder/position_encodings/encodings", 0)?;
    let n_text_ctx = m.dim("decoder/position_encodings/encodings", 0)?;
    let n_mels = m.dim("encoder/conv1/weight", 1)?;
    let n_heads_e = m.int("encoder/num_heads")?;
    let n_heads_d = m.int("decoder/num_heads")?;

    let mut plans = vec![plan("encoder.positional_embedding", "encoder/position_encodings/encodings")];
    for c in ["conv1", "conv2"] {
        plans.push(plan(format!("encoder.{c}.weight"), format!("encoder/{c}/weight")));
        let mut bias = plan(format!("encoder.{c}.bias"), format!("encoder/{c}/bias"));
        bias.shape = Some(vec![m.dim(&format!("encoder/{c}/bias"), 0)?, 1]);
        plans.push(bias);
    }
    plans.push(plan("encoder.ln_post.weight", "encoder/layer_norm/gamma"));
    plans.push(plan("encoder.ln_post.bias", "encoder/layer_norm/beta"));
    for i in 0..enc_layers {
        block(&mut plans, &format!("encoder.blocks.{i}"), &format!("encoder/layer_{i}"), false);
    }
    plans.push(plan("decoder.positional_embedding", "decoder/position_encodings/encodings"));
    plans.push(plan("decoder.token_embedding.weight", "decoder/embeddings/weight"));
    plans.push(plan("decoder.ln.weight", "decoder/layer_norm/gamma"));
    plans.push(plan("decoder.ln.bias", "decoder/layer_norm/beta"));
    for i in 0..dec_layers {
        block(&mut plans, &format!("decoder.blocks.{i}"), &format!("decoder/layer_{i}"), true);
    }
    // The key projections' biases are dropped (whisper.cpp has none): they must be zero.
    for (i, layers, parts) in [("encoder", enc_layers, 3), ("decoder", dec_layers, 3)] {
        for l in 0..layers {
            check_zero_part(&m, &format!("{i}/layer_{l}/self_attention/linear_0/bias"), 1, parts)?;
            if i == "decoder" {
                check_zero_part(&m, &format!("{i}/layer_{l}/attention/linear_1/bias"), 0, 2)?;
            }
        }
    }

    // The rank tokens of GPT-2 / Whisper's multilingual tiktoken; specials (50256+) follow.
    let tokens = vocabulary(tokenizer_json, 50256)?;

    let mut total = 0u64;
    let put = |out: &mut dyn Write, bytes: &[u8]| -> std::io::Result<u64> {
        out.write_all(bytes)?;
        Ok(bytes.len() as u64)
    };
    let i32s = |v: &[usize]| -> Vec<u8> { v.iter().flat_map(|x| (*x as i32).to_le_bytes()).collect() };
    total += put(out, &0x67676d6c_i32.to_le_bytes())?;
    total += put(
        out,
        &i32s(&[
            n_vocab,
            n_audio_ctx,
            n_state,
            n_heads_e,
            enc_layers,
            n_text_ctx,
            n_state,
            n_heads_d,
            dec_layers,
            n_mels,
            1, // f16
        ]),
    )?;
    let filters = mel_filters(n_mels);
    total += put(out, &i32s(&[n_mels, filters.len() / n_mels]))?;
    total += put(out, &filters.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>())?;
    total += put(out, &i32s(&[tokens.len()]))?;
    for t in &tokens {
        total += put(out, &i32s(&[t.len()]))?;
        total += put(out, t)?;
    }
    written(total);

    const F32_ALWAYS: [&str; 4] =
        ["encoder.conv1.bias", "encoder.conv2.bias", "encoder.positional_embedding", "decoder.positional_embedding"];
    for p in &plans {
        let src_shape = m.var(&p.src)?.shape.clone();
        let mut values = m.f32s(&p.src)?;
        let mut shape = src_shape.clone();
        if let Some((i, parts)) = p.part {
            if shape.is_empty() || shape[0] % parts != 0 {
                return Err(ConvertError::Model(format!("`{}` does not split in {parts}", p.src)));
            }
            let rows = shape[0] / parts;
            let per_row: usize = shape[1..].iter().product();
            values = values[i * rows * per_row..(i + 1) * rows * per_row].to_vec();
            shape[0] = rows;
        }
        if let Some(s) = &p.shape {
            shape = s.clone();
        }
        let nd = shape.len();
        let f16 = nd >= 2 && !F32_ALWAYS.contains(&p.name.as_str());
        let mut header = i32s(&[nd, p.name.len(), usize::from(f16)]);
        header.extend(i32s(&shape.iter().rev().copied().collect::<Vec<_>>()));
        header.extend(p.name.as_bytes());
        put(out, &header)?;
        let data: Vec<u8> = if f16 {
            values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect()
        } else {
            values.iter().flat_map(|v| v.to_le_bytes()).collect()
        };
        put(out, &data)?;
        written((header.len() + data.len()) as u64);
    }
    Ok(GgmlSummary { n_vocab, n_state, encoder_layers: enc_layers, decoder_layers: dec_layers, tensors: plans.len() })
}

fn check_zero_part(m: &Ct2<'_>, name: &str, i: usize, parts: usize) -> Result<(), ConvertError> {
    let v = m.f32s(name)?;
    let n = v.len() / parts;
    if v[i * n..(i + 1) * n].iter().any(|x| *x != 0.0) {
        return Err(ConvertError::Model(format!("`{name}`: the key bias is not zero")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mel_filters_match_librosa_properties() {
        let f = mel_filters(80);
        assert_eq!(f.len(), 80 * 201);
        // Slaney-normalised triangles: non-negative, each row has support, first row starts at
        // 0 Hz and peaks at the second FFT bin (40 Hz) with librosa's value 0.0246.
        assert!(f.iter().all(|v| *v >= 0.0));
        for row in f.chunks(201) {
            assert!(row.iter().any(|v| *v > 0.0));
        }
        assert_eq!(f[0], 0.0);
        assert!(f[0].is_sign_negative(), "numpy's -0.0");
        assert!((f[1] - 0.024_6).abs() < 1e-3, "{}", f[1]);
    }

    #[test]
    fn byte_level_alphabet_covers_every_byte() {
        let m = unicode_to_byte();
        assert_eq!(m.len(), 256);
        assert_eq!(m[&'Ġ'], b' ');
        assert_eq!(m[&'a'], b'a');
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        for input in [&b""[..], b"\x06\x00\x00\x00", b"\x06\x00\x00\x00\xff\xffWhisperSpec", &[0u8; 64]] {
            assert!(convert(input, b"{}", &mut out, |_| {}).is_err());
        }
    }
}
