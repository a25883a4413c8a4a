-- Halves the learning-rate scale when the loss spikes.
--
-- Keeps the mean of the last WINDOW losses; a step whose loss exceeds K times that mean is a spike
-- and halves the LR scale (st.set_lr_scale multiplies the scheduler's LR), at most once every
-- COOLDOWN steps and never below MIN_SCALE. The scale is also written to metrics.jsonl.
--
-- Use: "lua_hooks": ["scripts/hooks/lr_spike_scaledown.lua"] and edit the constants below.

local K = 3.0 -- spike threshold, in multiples of the running mean
local WINDOW = 50 -- losses in the running mean
local COOLDOWN = 100 -- steps between two cuts
local MIN_SCALE = 1 / 64 -- never scale the LR below this

local ring, count, head, sum = {}, 0, 0, 0
local scale = 1.0
local last_cut = nil

st.on("on_step_end", function(ev)
  local loss = ev.loss
  if type(loss) ~= "number" or loss ~= loss then return end
  if count >= WINDOW then
    local mean = sum / count
    local cooled = last_cut == nil or ev.step - last_cut >= COOLDOWN
    if loss > K * mean and cooled and scale > MIN_SCALE then
      scale = math.max(scale / 2, MIN_SCALE)
      last_cut = ev.step
      st.set_lr_scale(scale)
      st.metric("lr_scale", scale)
      st.log("warn", string.format("step %d: loss %.4g > %.1f x mean %.4g, lr scale -> %g",
        ev.step, loss, K, mean, scale))
    end
  end
  head = head % WINDOW + 1
  if ring[head] ~= nil then sum = sum - ring[head] else count = count + 1 end
  ring[head] = loss
  sum = sum + loss
end)
