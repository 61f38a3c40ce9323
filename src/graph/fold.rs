//! Folding batch norm into the layer before it, for inference. In eval mode a BatchNorm
//! after a convolution or linear layer is a per-output-channel affine map,
//! y = (conv(x) + b - mean) * s + beta with s = gamma / sqrt(var + eps), so
//! `w'[k, ...] = w[k, ...] * s[k]` and `b'[k] = (b[k] - mean[k]) * s[k] + beta[k]`
//! (b = 0 for a layer without bias) gives the same output with one kernel less. Only
//! eval-mode graphs are meaningful to fold: training needs the batch statistics.

use std::collections::{HashMap, HashSet};

use super::{Graph, Init, Node, NodeId, Op};
use super::NamedTensors;
use crate::{Error, Result};

/// Returns `graph` with every foldable BatchNorm removed, and the parameters of the new
/// graph (in its `params()` order). A BatchNorm is foldable when its input is a Conv2d or
/// Linear node that nothing else reads, whose weight (and bias) no other node uses, and
/// whose own parameters and state only it uses; others stay as they are. `params` and
/// `state` are the model's values by name (`Executor::read_params`, `read_state`).
/// A layer without bias gets one, named `{layer}.bias`.
pub fn fold_batch_norm(graph: &Graph, params: &[(String, Vec<usize>, Vec<f32>)], state: &[(String, Vec<usize>, Vec<f32>)]) -> Result<(Graph, NamedTensors)> {
    let values: HashMap<&str, &[f32]> = params.iter().chain(state).map(|(n, _, v)| (n.as_str(), v.as_slice())).collect();
    let get = |id: NodeId| -> Result<&[f32]> {
        let n = graph.node(id);
        let v = values.get(n.name.as_str()).ok_or_else(|| Error::shape("fold_batch_norm", format!("no value for '{}'", n.name)))?;
        if v.len() != n.shape.iter().product::<usize>() {
            return Err(Error::shape("fold_batch_norm", format!("'{}' has {} values for shape {:?}", n.name, v.len(), n.shape)));
        }
        Ok(v)
    };
    let mut readers = vec![0usize; graph.nodes.len()];
    for n in &graph.nodes {
        for i in &n.inputs {
            readers[i.0] += 1;
        }
    }
    // layer node -> (bn node, folded weight, folded bias)
    let mut folds: HashMap<NodeId, (NodeId, Vec<f32>, Vec<f32>)> = HashMap::new();
    let mut dropped = HashSet::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        let Op::BatchNorm { eps, .. } = n.op else { continue };
        let layer = n.inputs[0];
        let l = graph.node(layer);
        let only_here = |ids: &[NodeId]| ids.iter().all(|p| readers[p.0] == 1);
        if !matches!(l.op, Op::Conv2d { .. } | Op::Linear) || !only_here(&[layer]) || !only_here(&l.inputs[1..]) || !only_here(&n.inputs[1..]) {
            continue;
        }
        let (gamma, beta, mean, var) = (get(n.inputs[1])?, get(n.inputs[2])?, get(n.inputs[3])?, get(n.inputs[4])?);
        let w = get(l.inputs[1])?;
        let k = gamma.len();
        let b = match l.inputs.get(2) {
            Some(&b) => get(b)?.to_vec(),
            None => vec![0.0; k],
        };
        // in f64: the folded model should differ from the unfolded one by one rounding
        let s: Vec<f64> = (0..k).map(|c| gamma[c] as f64 / (var[c] as f64 + eps as f64).sqrt()).collect();
        let per = w.len() / k;
        let w2 = w.iter().enumerate().map(|(j, &v)| (v as f64 * s[j / per]) as f32).collect();
        let b2 = (0..k).map(|c| ((b[c] as f64 - mean[c] as f64) * s[c] + beta[c] as f64) as f32).collect();
        folds.insert(layer, (NodeId(i), w2, b2));
        dropped.extend(n.inputs[1..].iter().copied());
        dropped.insert(NodeId(i));
    }

    let mut out = Graph::new(graph.seed);
    let mut map: HashMap<NodeId, NodeId> = HashMap::new();
    let mut new_values: HashMap<String, Vec<f32>> = HashMap::new();
    let push = |out: &mut Graph, node: Node| {
        out.nodes.push(node);
        NodeId(out.nodes.len() - 1)
    };
    for (i, n) in graph.nodes.iter().enumerate() {
        let id = NodeId(i);
        if dropped.contains(&id) {
            if let Op::BatchNorm { .. } = n.op {
                map.insert(id, map[&n.inputs[0]]); // its consumers read the folded layer
            }
            continue;
        }
        let mut inputs: Vec<NodeId> = n.inputs.iter().map(|i| map[i]).collect();
        if let Some((_, w2, b2)) = folds.get(&id) {
            new_values.insert(graph.node(n.inputs[1]).name.clone(), w2.clone());
            let k = b2.len();
            match n.inputs.get(2) {
                Some(&b) => {
                    new_values.insert(graph.node(b).name.clone(), b2.clone());
                }
                None => {
                    let name = format!("{}.bias", n.name);
                    let b = push(&mut out, Node { name: name.clone(), op: Op::Param { init: Init::Constant(0.0) }, inputs: vec![], shape: vec![k] });
                    new_values.insert(name, b2.clone());
                    inputs.push(b);
                }
            }
        }
        let new = push(&mut out, Node { name: n.name.clone(), op: n.op.clone(), inputs, shape: n.shape.clone() });
        map.insert(id, new);
    }
    let folded = out
        .params()
        .iter()
        .map(|(_, name, shape)| {
            let v = match new_values.get(*name) {
                Some(v) => v.clone(),
                None => values.get(name).map(|v| v.to_vec()).ok_or_else(|| Error::shape("fold_batch_norm", format!("no value for '{name}'")))?,
            };
            Ok((name.to_string(), shape.to_vec(), v))
        })
        .collect::<Result<NamedTensors>>()?;
    Ok((out, folded))
}

/// Folds each BatchNorm that follows a conv or linear layer into that layer (one kernel less
/// per BatchNorm, the same logits: `graph::fold`), returning the graph and its tensors
/// (parameters, then the state of BatchNorms that could not be folded). `tensors` are a
/// checkpoint's: the parameters, then the state.
pub fn fold_checkpoint(graph: &Graph, tensors: &NamedTensors) -> Result<(Graph, NamedTensors)> {
    let n_params = graph.params().len();
    if tensors.len() == n_params {
        return Ok((graph.clone(), tensors.clone()));
    }
    let (params, state) = tensors.split_at(n_params.min(tensors.len()));
    let (folded, mut out) = fold_batch_norm(graph, params, state)?;
    for (_, name, _) in folded.state() {
        let t = state.iter().find(|t| t.0 == name).ok_or_else(|| Error::shape("fold_checkpoint", format!("no state '{name}'")))?;
        out.push(t.clone());
    }
    Ok((folded, out))
}
