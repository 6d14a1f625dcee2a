-- Per sensor and UTC hour: the robust hourly statistics the detectors' baselines are built from
-- (engine/detectors.py `hourly_statistics`; the columns must match its HOURLY_COLUMNS, tested).
-- Written by `oxy score`; read back by incremental scoring and batch inference, so that they
-- read hours, not minutes, of history.
create table if not exists score_hourly (
    sensor_id       varchar   not null,
    hour            timestamp not null,  -- UTC hour start
    local_hour      tinyint   not null,  -- hour of day at the site (sensors.timezone)
    n               uinteger  not null,  -- readings in the hour
    dt_med          double,              -- median seconds between consecutive readings
    value_med       double,              -- median reading
    level_med       double,              -- median local level (median of the reading and its
                                         --   neighbours)
    level_mad       double,              -- median |level - level_med| within the hour
    curve_mean      double,              -- mean |second difference| (the noise)
    step_med        double,              -- median |step| from the previous reading
    step_min        double,              -- smallest non-zero |step| (the resolution)
    flat_max        double,              -- longest flat run reached in the hour (seconds)
    temperature_med double,              -- median water temperature (degC), when read
    salinity_med    double,              -- median salinity (g/kg), when read
    primary key (sensor_id, hour)
)
