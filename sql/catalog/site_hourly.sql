-- Per site and UTC hour: how the whole site moved (engine/detectors.py `site_movement`).
-- Weather, tide or a bloom moves every probe of a site; fouling one. A sensor's contextual
-- profile moves by ctx_move, its drift departure is taken against drift_move.
create table if not exists site_hourly (
    site       varchar   not null,  -- customer and leading tag levels (score `site_sensors`)
    hour       timestamp not null,  -- UTC hour start
    ctx_move   double,              -- median log level against the sensors' own profiles
    drift_move double,              -- median drift departure of the site's sensors
    primary key (site, hour)
)
