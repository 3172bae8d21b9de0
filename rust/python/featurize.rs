//! `FeatureHasher` pyclass: converts chat messages to Rust strings, releases the GIL and calls
//! `crate::featurize`. Message-structure errors are `TypeError`s naming the offending path.

use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods};
use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyMapping, PySequence, PyString, PyTuple};

use crate::error::CoreError;
use crate::featurize::{Featurizer, Request, Role, Turn, DENSE_NAMES, N_DENSE};

/// One request's messages, owned so the GIL can be released while hashing.
struct OwnedRequest {
    turns: Vec<(Role, String)>,
    bare: bool,
}

impl OwnedRequest {
    fn turns(&self) -> Vec<Turn<'_>> {
        self.turns
            .iter()
            .map(|(role, content)| Turn {
                role: *role,
                content: content.as_str(),
            })
            .collect()
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A message's content: a string, `None` (empty, as in assistant tool-call messages), or an
/// OpenAI list of content parts whose text parts (`str` or `{"type": "text", "text": str}`)
/// are joined with newlines; other parts (images, audio) are skipped.
fn content_text(obj: &Bound<'_, PyAny>, at: &str) -> PyResult<String> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(s.to_str()?.to_owned());
    }
    if obj.is_none() {
        return Ok(String::new());
    }
    if let Ok(parts) = obj.cast::<PyList>() {
        let mut out = String::new();
        for (j, part) in parts.iter().enumerate() {
            let text = if let Ok(s) = part.cast::<PyString>() {
                Some(s.to_str()?.to_owned())
            } else if let Ok(d) = part.cast::<PyDict>() {
                match d.get_item("text")? {
                    Some(t) => match t.cast::<PyString>() {
                        Ok(s) => Some(s.to_str()?.to_owned()),
                        Err(_) => {
                            return Err(PyTypeError::new_err(format!(
                                "{at}[{j}]['text'] must be a str, got {}",
                                type_name(&t)
                            )))
                        }
                    },
                    None => None,
                }
            } else {
                return Err(PyTypeError::new_err(format!(
                    "{at}[{j}] must be a str or a content-part dict, got {}",
                    type_name(&part)
                )));
            };
            if let Some(t) = text {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(&t);
            }
        }
        return Ok(out);
    }
    Err(PyTypeError::new_err(format!(
        "{at} must be a str, None or a list of content parts, got {}",
        type_name(obj)
    )))
}

/// `obj[key]` of a dict (fast path) or any other mapping; `None` when the key is missing.
fn get_key<'py>(obj: &Bound<'py, PyAny>, key: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
    if let Ok(d) = obj.cast::<PyDict>() {
        return d.get_item(key);
    }
    match obj.cast::<PyMapping>()?.get_item(key) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_instance_of::<PyKeyError>(obj.py()) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The items of a list or tuple (fast paths) or any other non-string sequence.
fn sequence_items<'py>(obj: &Bound<'py, PyAny>) -> Option<PyResult<Vec<Bound<'py, PyAny>>>> {
    if let Ok(l) = obj.cast::<PyList>() {
        return Some(Ok(l.iter().collect()));
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return Some(Ok(t.iter().collect()));
    }
    if obj.is_instance_of::<PyString>()
        || obj.is_instance_of::<PyBytes>()
        || obj.is_instance_of::<PyByteArray>()
    {
        return None;
    }
    let seq = obj.cast::<PySequence>().ok()?;
    Some(
        seq.try_iter()
            .and_then(|it| it.collect::<PyResult<Vec<_>>>()),
    )
}

fn message(obj: &Bound<'_, PyAny>, at: &str) -> PyResult<(Role, String)> {
    if !(obj.is_instance_of::<PyDict>() || obj.cast::<PyMapping>().is_ok()) {
        return Err(PyTypeError::new_err(format!(
            "{at} must be a dict with 'role' and 'content', got {}",
            type_name(obj)
        )));
    }
    let role = match get_key(obj, "role")? {
        Some(r) => match r.cast::<PyString>() {
            Ok(s) => Role::parse(s.to_str()?),
            Err(_) => {
                return Err(PyTypeError::new_err(format!(
                    "{at}['role'] must be a str, got {}",
                    type_name(&r)
                )))
            }
        },
        None => return Err(PyTypeError::new_err(format!("{at} has no 'role' key"))),
    };
    let content = match get_key(obj, "content")? {
        Some(c) => content_text(&c, &format!("{at}['content']"))?,
        None => return Err(PyTypeError::new_err(format!("{at} has no 'content' key"))),
    };
    Ok((role, content))
}

/// A prompt string (one user turn, no chat template) or a list/tuple of message dicts.
fn request(obj: &Bound<'_, PyAny>, at: &str) -> PyResult<OwnedRequest> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(OwnedRequest {
            turns: vec![(Role::User, s.to_str()?.to_owned())],
            bare: true,
        });
    }
    let what = "a str or a list of {'role', 'content'} dicts";
    let turns = each_item(obj, at, what, message)?;
    Ok(OwnedRequest { turns, bare: false })
}

/// `each(item, "at[i]")` for every item of the sequence `obj` (`sequence_items`); anything
/// else is a `TypeError`: "`at` must be `what`, got <type>".
fn each_item<T>(
    obj: &Bound<'_, PyAny>,
    at: &str,
    what: &str,
    each: impl Fn(&Bound<'_, PyAny>, &str) -> PyResult<T>,
) -> PyResult<Vec<T>> {
    let Some(items) = sequence_items(obj) else {
        return Err(PyTypeError::new_err(format!(
            "{at} must be {what}, got {}",
            type_name(obj)
        )));
    };
    items?
        .iter()
        .enumerate()
        .map(|(i, m)| each(m, &format!("{at}[{i}]")))
        .collect()
}

/// The `hash-v1` featurizer of `rust/featurize/` (immutable, so thread-safe without a lock).
#[pyclass(frozen, module = "uniscale._core", name = "FeatureHasher")]
pub struct PyFeatureHasher {
    inner: Featurizer,
}

#[pymethods]
impl PyFeatureHasher {
    #[new]
    #[pyo3(signature = (dim=64, *, char_ngram=3, seed=0))]
    fn new(dim: i64, char_ngram: i64, seed: u64) -> PyResult<Self> {
        // Negative values map to 0, which `Featurizer::new` rejects with the allowed range.
        let conv = |v: i64| usize::try_from(v).unwrap_or(0);
        let inner = Featurizer::new(conv(dim), conv(char_ngram), seed).map_err(|e| match e {
            CoreError::Config(m) => CoreError::Config(format!(
                "{m} (called with dim={dim}, char_ngram={char_ngram})"
            )),
            other => other,
        })?;
        Ok(PyFeatureHasher { inner })
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    #[getter]
    fn char_ngram(&self) -> usize {
        self.inner.char_ngram()
    }
    #[getter]
    fn seed(&self) -> u64 {
        self.inner.seed()
    }
    #[getter]
    fn version(&self) -> String {
        self.inner.version()
    }
    /// Number of dense structure features at the start of every vector.
    #[classattr]
    fn n_dense() -> usize {
        N_DENSE
    }
    /// Names of the dense features `x[:n_dense]`.
    #[staticmethod]
    fn dense_names() -> Vec<&'static str> {
        DENSE_NAMES.to_vec()
    }

    /// Features of one request: a new `(dim,)` float64 array of unit L2 norm.
    fn featurize<'py>(
        &self,
        py: Python<'py>,
        messages: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let req = request(messages, "messages")?;
        let x = py.detach(|| {
            let turns = req.turns();
            self.inner.featurize(Request {
                turns: &turns,
                bare: req.bare,
            })
        })?;
        Ok(x.into_pyarray(py))
    }

    /// Features of many requests: `(n, dim)`; the GIL is released once for the batch.
    fn featurize_many<'py>(
        &self,
        py: Python<'py>,
        batch: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let reqs = each_item(batch, "batch", "a list of requests", request)?;
        let n = reqs.len();
        let dim = self.inner.dim();
        let flat = py.detach(|| {
            let turns: Vec<Vec<Turn<'_>>> = reqs.iter().map(OwnedRequest::turns).collect();
            let rs: Vec<Request<'_>> = turns
                .iter()
                .zip(&reqs)
                .map(|(t, r)| Request {
                    turns: t,
                    bare: r.bare,
                })
                .collect();
            self.inner.featurize_many(&rs)
        })?;
        flat.into_pyarray(py).reshape([n, dim])
    }

    /// Estimated prompt tokens (a tokenizer-free heuristic; see `rust/featurize/`).
    fn estimate_tokens(&self, py: Python<'_>, messages: &Bound<'_, PyAny>) -> PyResult<u64> {
        let req = request(messages, "messages")?;
        Ok(py.detach(|| {
            let turns = req.turns();
            Featurizer::estimate_tokens(Request {
                turns: &turns,
                bare: req.bare,
            })
        })?)
    }

    /// `(features, estimated tokens)` from one conversion of the messages.
    fn featurize_with_tokens<'py>(
        &self,
        py: Python<'py>,
        messages: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyArray1<f64>>, u64)> {
        let req = request(messages, "messages")?;
        let (x, t) = py.detach(|| {
            let turns = req.turns();
            self.inner.featurize_with_tokens(Request {
                turns: &turns,
                bare: req.bare,
            })
        })?;
        Ok((x.into_pyarray(py), t))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let f = &slf.get().inner;
        let cls = slf.as_any().get_type();
        let kwargs = PyDict::new(py);
        kwargs.set_item("char_ngram", f.char_ngram())?;
        kwargs.set_item("seed", f.seed())?;
        // functools.partial(cls, dim, char_ngram=..., seed=...) keeps the keyword-only arguments.
        let partial = py
            .import("functools")?
            .getattr("partial")?
            .call((cls, f.dim()), Some(&kwargs))?;
        PyTuple::new(py, [partial, PyTuple::empty(py).into_any()])
    }

    fn __repr__(&self) -> String {
        format!(
            "FeatureHasher(dim={}, char_ngram={}, seed={}, version={:?})",
            self.inner.dim(),
            self.inner.char_ngram(),
            self.inner.seed(),
            self.inner.version()
        )
    }
}
