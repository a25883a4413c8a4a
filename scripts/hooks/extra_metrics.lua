-- Writes extra training metrics to metrics.jsonl with st.metric.
--
--   loss_ema         exponential moving average of the step loss (DECAY)
--   loss_min         lowest step loss so far
--   grad_norm_ema    EMA of the gradient norm (when the step reports one)
--   steps_per_second 1 / step_time
--
-- Use: "lua_hooks": ["scripts/hooks/extra_metrics.lua"].

local DECAY = 0.99

local loss_ema, loss_min, grad_ema

local function ema(old, value)
  if old == nil then return value end
  return DECAY * old + (1 - DECAY) * value
end

st.on("on_step_end", function(ev)
  if type(ev.loss) == "number" and ev.loss == ev.loss then
    loss_ema = ema(loss_ema, ev.loss)
    loss_min = math.min(loss_min or ev.loss, ev.loss)
    st.metric("loss_ema", loss_ema)
    st.metric("loss_min", loss_min)
  end
  if type(ev.grad_norm) == "number" and ev.grad_norm == ev.grad_norm then
    grad_ema = ema(grad_ema, ev.grad_norm)
    st.metric("grad_norm_ema", grad_ema)
  end
  if type(ev.step_time) == "number" and ev.step_time > 0 then
    st.metric("steps_per_second", 1 / ev.step_time)
  end
end)
