//! Rules and loops: the sections of a file whose tasks compile into a
//! body (a rule's `then`, a loop's steps) rather than into the run's
//! first batch.

use std::path::Path;

use super::{without_repeated_edges, Compiler, Scope};
use crate::file::doc::{LoopDoc, RuleDoc};
use crate::file::error::{FileError, Place};
use crate::model::{Loop, LoopStep, Mutation, Predicate, Rule, Until};

impl Compiler<'_, '_> {
    /// The file's rules, each with its `then` tasks compiled into its
    /// body.
    pub(super) fn rules(
        &mut self,
        scope: &Scope,
        file: &Path,
        docs: &[RuleDoc],
    ) -> Result<Vec<Mutation>, FileError> {
        let mut rules: Vec<Mutation> = Vec::new();
        for r in docs {
            let place = Place::of(file, &r.id);
            let fail =
                |m: String| FileError::new(place.clone(), format!("rule `{}`: {m}", r.id.value));
            let when: Predicate = serde_json::from_value(r.when.value.clone()).map_err(|e| {
                FileError::new(
                    Place::of(file, &r.when),
                    format!("rule `{}`: when: {e}", r.id.value),
                )
            })?;
            if r.then.is_empty() {
                return Err(fail("then holds no task".into()));
            }
            let start = self.mutations.len();
            self.unit(scope, &r.then)?;
            let body = without_repeated_edges(self.mutations.drain(start..).collect());
            let mut rule = Rule::new(r.id.value.clone(), when);
            rule.then = body;
            rule.check().map_err(fail)?;
            if rules
                .iter()
                .any(|m| matches!(m, Mutation::AddRule { rule: o } if o.id == rule.id))
            {
                return Err(fail("the id is used twice".into()));
            }
            rules.push(Mutation::AddRule {
                rule: Box::new(rule),
            });
        }
        Ok(rules)
    }

    /// The file's loops, each with its body tasks compiled into its
    /// steps (one node each).
    pub(super) fn loops(
        &mut self,
        scope: &Scope,
        file: &Path,
        docs: &[LoopDoc],
    ) -> Result<Vec<Mutation>, FileError> {
        let mut loops: Vec<Mutation> = Vec::new();
        for l in docs {
            let place = Place::of(file, &l.id);
            let fail =
                |m: String| FileError::new(place.clone(), format!("loop `{}`: {m}", l.id.value));
            let until: Until = match &l.until {
                None => Until::default(),
                Some(u) => serde_json::from_value(u.value.clone()).map_err(|e| {
                    FileError::new(
                        Place::of(file, u),
                        format!("loop `{}`: until: {e}", l.id.value),
                    )
                })?,
            };
            for end in [&l.from, &l.to] {
                if !self
                    .mutations
                    .iter()
                    .any(|m| matches!(m, Mutation::AddNode { id, .. } if *id == end.value))
                {
                    return Err(FileError::new(
                        Place::of(file, end),
                        format!(
                            "loop `{}`: `{}` is not a task of the file",
                            l.id.value, end.value
                        ),
                    ));
                }
            }
            if l.body.is_empty() {
                return Err(fail("the body holds no task".into()));
            }
            let mut def = Loop::new(
                l.id.value.clone(),
                l.from.value.clone(),
                l.to.value.clone(),
                until,
                l.max.value,
            );
            if let Some(on_cap) = l.on_cap {
                def = def.on_cap(on_cap);
            }
            for t in &l.body {
                let start = self.mutations.len();
                self.unit(scope, std::slice::from_ref(t))?;
                let made: Vec<Mutation> = self.mutations.drain(start..).collect();
                let mut nodes = made.into_iter().filter_map(|m| match m {
                    Mutation::AddNode {
                        id,
                        task,
                        inputs,
                        attrs,
                    } => Some((id, task, inputs, attrs)),
                    _ => None,
                });
                let (Some((id, task, inputs, attrs)), None) = (nodes.next(), nodes.next()) else {
                    return Err(FileError::new(
                        Place::of(file, &t.id),
                        format!(
                            "loop `{}`: a body task is one task (no `each`, `then` or `parallel`)",
                            l.id.value
                        ),
                    ));
                };
                let mut step = LoopStep::new(id, *task).inputs(inputs);
                step.attrs = attrs;
                def = def.step(step);
            }
            def.check().map_err(|e| FileError::new(place.clone(), e))?;
            if loops
                .iter()
                .any(|m| matches!(m, Mutation::AddLoop { def: o } if o.id == def.id))
            {
                return Err(fail("the id is used twice".into()));
            }
            loops.extend(def.declaration());
        }
        Ok(loops)
    }
}
