//! The Python module `imgtype`: `ImageClassificationAPI(model_path, device="auto")` with the
//! Python system's `predict(image_paths)`, over the core crate's API. The GIL is released
//! while images are fetched, decoded and run through the model, so a threaded backend
//! (gunicorn threads, FastAPI's thread pool) gets parallel calls; one instance serves many
//! threads. Paths go through the core crate's source policy (restricted by default).

use std::sync::Arc;

use imgtype_images::SourcePolicy;
use imgtype_infer::{ImageClassificationApi, ERROR_CLASS};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

#[pyclass(name = "ImageClassificationAPI", module = "imgtype", frozen)]
struct PyImageClassificationApi {
    api: std::mem::ManuallyDrop<Arc<ImageClassificationApi>>,
}

/// The API is dropped with the GIL released: dropping it waits for its forward-pass thread,
/// which may be logging, and logging takes the GIL.
impl Drop for PyImageClassificationApi {
    fn drop(&mut self) {
        // SAFETY: `api` is taken once, here, and never used after.
        let api = unsafe { std::mem::ManuallyDrop::take(&mut self.api) };
        // SAFETY: a Python object is deallocated with the GIL held.
        let py = unsafe { Python::assume_gil_acquired() };
        py.allow_threads(move || drop(api));
    }
}

fn error_of(e: anyhow::Error) -> PyErr {
    PyRuntimeError::new_err(format!("{e:#}"))
}

/// Runs `work`; a panic in it (a bug, or libtorch failing in a way the core crate did not
/// foresee) is an ordinary `RuntimeError`, not pyo3's `PanicException`, which derives from
/// `BaseException` and so escapes a backend's `except Exception`.
fn guarded<T>(work: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        let first_line = message.lines().next().unwrap_or_default();
        Err(PyRuntimeError::new_err(format!("imgtype failed internally: {first_line}")))
    })
}

#[pymethods]
impl PyImageClassificationApi {
    /// Loads a model file (ours, or the Python system's best_model.pth) or a run folder.
    /// `device`: auto, cpu, cuda, cuda:N or mps. The source policy: relative keys inside the
    /// model's image folder or under its CDN; `allow_absolute_paths`, `allowed_hosts`
    /// (absolute URLs' hosts, besides the CDN's) and `allow_private_addresses` loosen it.
    #[new]
    #[pyo3(signature = (model_path, device="auto", allow_absolute_paths=false, allowed_hosts=None, allow_private_addresses=false))]
    fn new(
        py: Python<'_>,
        model_path: std::path::PathBuf,
        device: &str,
        allow_absolute_paths: bool,
        allowed_hosts: Option<Vec<String>>,
        allow_private_addresses: bool,
    ) -> PyResult<Self> {
        let choice: imgtype_base::config::DeviceChoice =
            device.parse().map_err(|e: anyhow::Error| PyValueError::new_err(format!("device: {e:#}")))?;
        let policy = SourcePolicy {
            allow_absolute_paths,
            allowed_hosts: Some(allowed_hosts.unwrap_or_default()),
            allow_private_addresses,
            ..SourcePolicy::restricted()
        };
        py.allow_threads(|| {
            guarded(|| {
                let device = imgtype_model::device::resolve_device(choice).map_err(error_of)?;
                let api = ImageClassificationApi::with_device(&model_path, device)
                    .map_err(error_of)?
                    .with_source_policy(policy)
                    .map_err(|e| PyValueError::new_err(format!("{e:#}")))?;
                Ok(Self { api: std::mem::ManuallyDrop::new(Arc::new(api)) })
            })
        })
    }

    /// The class names, in the model's output order.
    #[getter]
    fn class_names(&self) -> Vec<String> {
        self.api.class_names().to_vec()
    }

    /// `[{image_path, predicted_class, confidence}]` in the order given; an image that cannot
    /// be used gives `predicted_class = "ERROR"`, confidence 0.0 and the reason in `error`.
    /// With `top_k` (a number of classes) or `probabilities=True` each row also carries
    /// `top_k` ([(class, probability)]) and `probabilities` ({class: probability}).
    #[pyo3(signature = (image_paths, top_k=None, probabilities=false))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        image_paths: Vec<String>,
        top_k: Option<usize>,
        probabilities: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        if top_k.is_none() && !probabilities {
            let results = py.allow_threads(|| guarded(|| Ok(self.api.predict(&image_paths))))?;
            let rows = PyList::empty(py);
            for r in results {
                let row = PyDict::new(py);
                row.set_item("image_path", &r.image_path)?;
                row.set_item("predicted_class", &r.predicted_class)?;
                row.set_item("confidence", r.confidence)?;
                row.set_item("low_confidence", r.low_confidence)?;
                if let Some(error) = &r.error {
                    row.set_item("error", error)?;
                }
                rows.append(row)?;
            }
            return Ok(rows);
        }
        let predictor = self.api.predictor();
        let api = &self.api;
        let outcomes = py.allow_threads(|| guarded(|| Ok(api.predict_full(&image_paths))))?;
        let names = predictor.class_names();
        let rows = PyList::empty(py);
        for (path, outcome) in image_paths.iter().zip(outcomes) {
            let row = PyDict::new(py);
            row.set_item("image_path", path)?;
            match outcome {
                Ok(p) => {
                    row.set_item("predicted_class", &p.predicted_class)?;
                    row.set_item("confidence", p.confidence)?;
                    row.set_item("low_confidence", p.low_confidence)?;
                    if let Some(k) = top_k {
                        let mut order: Vec<usize> = (0..names.len()).collect();
                        order.sort_by(|&a, &b| p.probabilities[b].total_cmp(&p.probabilities[a]));
                        let best: Vec<(String, f64)> =
                            order.iter().take(k.max(1)).map(|&c| (names[c].clone(), p.probabilities[c])).collect();
                        row.set_item("top_k", best)?;
                    }
                    if probabilities {
                        let all = PyDict::new(py);
                        for (name, value) in names.iter().zip(&p.probabilities) {
                            all.set_item(name, value)?;
                        }
                        row.set_item("probabilities", all)?;
                    }
                }
                Err(reason) => {
                    row.set_item("predicted_class", ERROR_CLASS)?;
                    row.set_item("confidence", 0.0)?;
                    row.set_item("low_confidence", false)?;
                    row.set_item("error", reason)?;
                }
            }
            rows.append(row)?;
        }
        Ok(rows)
    }

    /// One image: the row `predict` gives for it.
    #[pyo3(signature = (image_path, top_k=None, probabilities=false))]
    fn predict_one<'py>(
        &self,
        py: Python<'py>,
        image_path: String,
        top_k: Option<usize>,
        probabilities: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.predict(py, vec![image_path], top_k, probabilities)?.get_item(0)
    }
}

#[pymodule]
#[pyo3(name = "imgtype")]
fn python_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Warnings (a runtime that failed to load, an image left out) go to Python's `logging`,
    // logger "imgtype" and below; with no handler configured, Python prints WARNING and up.
    let _ = pyo3_log::try_init();
    m.add_class::<PyImageClassificationApi>()?;
    Ok(())
}
