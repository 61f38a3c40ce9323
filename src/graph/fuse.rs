//! Fusion: the peephole decisions lowering asks of the graph (a ReLU into its layer's
//! epilogue, a ReLU's or a max-pool's backward into the step that reads them), and the
//! passes over the finished plan ([`join_pools`]). Adding a fusion is a function here;
//! lowering emits the fused step where a decision here says so.

use super::lower::Lowering;
use super::plan::{Mode, Plan, PoolForward, PoolRoute, Step};
use super::{NodeId, Op};

impl Lowering<'_> {
    /// The ReLU node fused into conv/linear node `n`'s epilogue: the only reader of `n`.
    /// `n`'s value is then the ReLU's output (the pre-activation is never stored), and the
    /// ReLU's backward masks by its output, the same mask: y > 0 exactly when x > 0.
    pub(super) fn fused_relu(&self, n: NodeId) -> Option<NodeId> {
        if !matches!(self.graph.node(n).op, Op::Conv2d { .. } | Op::Linear) {
            return None;
        }
        let mut readers = self.graph.nodes.iter().enumerate().filter(|(_, m)| m.inputs.contains(&n));
        match (readers.next(), readers.next()) {
            (Some((r, m)), None) if m.op == Op::Relu => Some(NodeId(r)),
            _ => None,
        }
    }

    /// In training, when node `x` is a ReLU whose only reader is the node being
    /// differentiated (a max-pool, a small linear layer), that reader applies the ReLU's
    /// mask itself: returns the ReLU's input, the node that then receives the gradient.
    /// Explanations keep the ReLU's own gradient (Grad-CAM reads it).
    pub(super) fn relu_backward_fused_into_reader(&self, x: NodeId, mode: Mode) -> Option<NodeId> {
        let relu = self.graph.node(x);
        let fused = mode == Mode::Train && relu.op == Op::Relu && self.needs[relu.inputs[0].0] && self.sole_reader(x);
        fused.then(|| relu.inputs[0])
    }

    /// Whether exactly one node reads node `n`.
    pub(super) fn sole_reader(&self, n: NodeId) -> bool {
        self.graph.nodes.iter().filter(|m| m.inputs.contains(&n)).count() == 1
    }

    /// In training, the max-pool whose backward the input-gradient step of the conv or linear
    /// layer reading `x` runs too (`PoolRoute`): `x` is that pool, or a flatten view of it,
    /// read by the layer alone (the view by the layer, the pool by the view), and the pool's
    /// windows tile its input exactly. Explanations keep the pool's output gradient
    /// (Grad-CAM reads feature maps' gradients).
    pub(super) fn routed_pool(&self, x: NodeId, mode: Mode) -> Option<NodeId> {
        let pool = match self.graph.node(x).op {
            Op::Flatten => self.graph.node(x).inputs[0],
            _ => x,
        };
        let node = self.graph.node(pool);
        let routed = mode == Mode::Train
            && self.sole_reader(x)
            && self.sole_reader(pool)
            && matches!(node.op, Op::MaxPool2d { .. })
            && self.needs[node.inputs[0].0]
            && self.pool_geometry(pool).tiles_exactly();
        routed.then_some(pool)
    }

    /// The route of max-pool `pool` ([`Self::routed_pool`]) and the node that receives the
    /// gradient: the pool's input, or that ReLU's input when the ReLU's backward is fused too.
    pub(super) fn pool_route(&self, pool: NodeId, mode: Mode) -> (NodeId, PoolRoute) {
        let px = self.graph.node(pool).inputs[0];
        let (target, relu) = match self.relu_backward_fused_into_reader(px, mode) {
            Some(input) => (input, Some(self.out(px))),
            None => (px, None),
        };
        (target, PoolRoute { pool: self.pool_geometry(pool), argmax: self.argmax[&pool], relu })
    }
}

/// A max-pool whose input the step just before it makes (a convolution) runs in that step:
/// `Step::Conv2dForward { pool: Some(..) }`, one dispatch where the kernel can
/// (kernels/conv/shared.rs on GPUs, kernels/conv/direct.rs on CPU adapters), in every mode.
/// The price in the forward-only modes: the convolution's output and the pool's are live
/// at once, where with separate steps the pool's output reused the memory of the previous
/// pool's output (the MNIST CNN's evaluator at batch 64: 7.2 MB planned against 5.2).
pub fn join_pools(plan: &mut Plan) {
    let mut steps = Vec::with_capacity(plan.steps.len());
    for step in plan.steps.drain(..) {
        if let (Step::MaxPoolForward { pool, x, y, argmax }, Some(Step::Conv2dForward { y: conv_y, pool: joined @ None, .. })) = (&step, steps.last_mut()) {
            if conv_y == x {
                *joined = Some(PoolForward { pool: *pool, y: *y, argmax: *argmax });
                continue;
            }
        }
        steps.push(step);
    }
    plan.steps = steps;
}
