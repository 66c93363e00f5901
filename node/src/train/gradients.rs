//! The trainers' gradients on this node's kernels: [`ClassifierGradients`], the
//! [`GradientFactory`] behind the actors' `trainer` role, builds a [`ClassifierSource`] from the
//! model a coordinator describes in [`TrainerArgs::model`].

use std::sync::Arc;

use flotilla_actors::data::record::Record;
use flotilla_actors::training::coordinator::trainers::GradientFactory;
use flotilla_actors::training::trainer::GradientSource;
use flotilla_protocol::training::TrainerArgs;

use crate::models::build::ModelArgs;
use crate::models::gradient::ClassifierSource;

/// Builds kernels-backed classifier trainers.
pub struct ClassifierGradients {
    /// How much slower than the machine this node's trainers run (1.0: full speed). A trainer
    /// slowed to `f` sleeps `f − 1` times its compute time after each batch, so one machine can
    /// stand in for a mesh of unequal devices when measuring how shares adapt.
    pub slowdown: f64,
}

impl GradientFactory for ClassifierGradients {
    fn source(&self, a: &TrainerArgs) -> Result<Arc<dyn GradientSource>, String> {
        let model = ModelArgs::from_bytes(&a.model)?;
        let inner = model.source(&a.classes, &a.text_field, &a.label_field)?;
        Ok(Arc::new(Slowed {
            inner,
            factor: self.slowdown,
        }))
    }
}

/// A gradient source slowed down by a factor (see [`ClassifierGradients::slowdown`]).
struct Slowed {
    inner: ClassifierSource,
    factor: f64,
}

impl GradientSource for Slowed {
    fn compute(
        &self,
        params: &[f32],
        batch: &[Record],
    ) -> std::result::Result<(Vec<f32>, f32, usize), String> {
        let started = std::time::Instant::now();
        let out = self.inner.compute(params, batch);
        if self.factor > 1.0 {
            std::thread::sleep(started.elapsed().mul_f64(self.factor - 1.0));
        }
        out
    }
}
